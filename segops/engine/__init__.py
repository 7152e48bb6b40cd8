"""Plain torch training and prediction loops; used by Ray workers and by tests directly."""
