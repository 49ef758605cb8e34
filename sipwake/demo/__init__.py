"""`sipwake demo`: the whole story on one machine, with simulated apps (story.py)."""
