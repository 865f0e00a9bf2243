"""``python -m scripts.prepare``: the eleven published datasets, from their official downloads to one datalist.

Each dataset has a reader (``readers/``) that knows its download's folder layout and turns one case into an image
and a label volume in world coordinates; everything else is shared: the label values are checked and mapped as the
task registry says (:mod:`.labels`), image and label are checked against each other and truly reoriented
(:mod:`.geometry`), a case is staged and moved into place in one step (:mod:`.staging`), the official splits
(:mod:`.splits`) decide each case's datalist section (:mod:`.datalists`), and :mod:`.runner` runs the cases of a
dataset in parallel with a progress bar, one line per bad case and a summary.
"""
