"""Data: the shared data folder and languages, training-data recipes, chat templates, translation, decontamination."""
