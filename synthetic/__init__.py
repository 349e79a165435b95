"""Synthetic data with planted ground truth, for tests, demos and benchmarks.

It stands apart from the library the way ``zarr.testing`` does: it may import
``ingest``, ``features`` and ``training`` (it writes slides through the public write
paths and plants what the models must find), and nothing in those layers imports it.
Only the CLI's ``demo`` and ``info --synthetic`` reach it from above.

* :mod:`synthetic.slides`: pyramidal H&E-like TIFFs with tissue masks, nests,
  lymphocytes, stain variation, pasted real tissue and tissue-set designs.
* :mod:`synthetic.demo`: the README's 12-slide demo cohort and its labels.
* :mod:`synthetic.mil`: bags with planted positive tiles for MIL.
* :mod:`synthetic.spatial`, :mod:`synthetic.spatial_slides`: cohorts where only the
  arrangement of tile types carries the label, with calibrated noise models.
* :mod:`synthetic.tiles`: tile-level truth (types, burden) for tile classifiers.
* :mod:`synthetic.omics`: expression tables whose signatures follow planted tissue.
"""
