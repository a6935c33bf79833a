

def test_a_fine_tuned_identity_is_random_exactly_when_its_base_is():
    from crossmodal.ir import identity
    tuned = {"kind": "finetune", "base": {"kind": "random", "seed": 3}, "modalities": ["sketch"], "train_from": "fc6",
             "head": "new", "tower": "sketch"}
    assert identity.is_random(tuned) and identity.banner(tuned)
    assert identity.describe(tuned) == ("fine-tuned on sketch (from fc6, head new, the sketch tower) from random "
                                        "weights (seed 3)")
    known = {**tuned, "base": {"kind": "card", "card": "vgg16-places365-pytorch", "sha256": "ab" * 32}}
    assert not identity.is_random(known) and identity.banner(known) is None
