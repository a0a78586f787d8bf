"""The data: the dataset registry (registry: name -> splits, classes, native size), the
glyph corpus of the mini study, the 14 paper datasets on disk (paper, paper_loaders), tiny
fake copies of them (fake_data) and per-class sampling (sampling)."""
