"""``crossmodal units``: what each unit of a layer responds to, in every modality.

* :mod:`.topk` — a unit's score per image (its maximum over positions) and the bounded top-K per unit;
* :mod:`.cache` — the streamed pass: each unit's maximum and its position per image, resumable and locked;
* :mod:`.agreement` — per-unit agreement of the top images' categories across modalities, and chance;
* :mod:`.geometry` — receptive-field boxes mapped back through the crop and resize; de-normalising;
* :mod:`.maximize` — activation maximisation (regularised gradient ascent on the input);
* :mod:`.selection` — which units to keep and to draw;
* :mod:`.tiles`, :mod:`.gallery` — the PNGs; :mod:`.reports` — ``units.json``, ``units.md``;
* :mod:`.job` — the whole command.
"""
