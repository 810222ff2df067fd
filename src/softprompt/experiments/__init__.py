"""The paper's studies at small scale: runner, studies, report."""
