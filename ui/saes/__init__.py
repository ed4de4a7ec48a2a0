"""The SAEs tab: the set's quality and its sets (`tab`), training a new set (`train_panel`),
loading from the Hub (`hub_panel`, `release_list`), the SAE lab (`lab_panel`, its figures in
`lab_figures`)."""
