"""Reader backends: cuCIM, OpenSlide, tiffslide. Each imports its library lazily."""
