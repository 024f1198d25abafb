"""Shared helpers of the command-line segmentation tests: a tiny U-Net and a quiet runner."""

from bayes_nest.cli import main

TINY = ["--widths", "4,8", "--groups", "2", "--model-option", "bottleneck_blocks=1"]
QUIET = ["--no-progress", "--threads", "1"]


def run(argv, capsys):
    """Run ``bayes-nest argv`` quietly; return ``(exit code, stdout, stderr)``."""
    code = main([*argv, *QUIET])
    out = capsys.readouterr()
    return code, out.out, out.err
