"""The visualization techniques, one small module each, all working on engine.Model."""
