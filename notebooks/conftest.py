# Notebooks 05 (training) and 06 (results) store outputs of a real training run, which a CPU
# cannot reproduce; tests/test_notebooks_run.py executes them with papermill on tiny parameters.
collect_ignore = ["05_training.ipynb", "06_results.ipynb"]
