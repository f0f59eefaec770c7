"""The model atlas: every unit of chosen layers, its feature visualization and the images that excite it, as a
static site (stages.py picks layers, receptive_field.py maps units to pixels, scan.py is the dataset pass,
site.py writes the pages, build.py runs them in order)."""
