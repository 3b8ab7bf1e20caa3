"""What is done with recorded runs besides tabulating them: rescoring their kept outputs, and
scoring their kept prompts on other datasets."""
