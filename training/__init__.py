"""Training: omics tables, cohorts and splits, bag datasets, MIL and graph models on Ray Train."""
