"""Running a benchmark file: planning its grid, the Ray actor pool that runs the trials, and the run itself."""
