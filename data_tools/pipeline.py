"""The whole chain over a folder of PDFs: render, layout, segment, teach, assemble, report.

  python -m data_tools.pipeline --pdf_dir PDFS --out WORK [--teacher rule|openai] [--seed N]
                                [--workers N] [any option of the single stages]

Every stage skips the documents it has already finished with the same inputs and parameters, so
rerunning after a kill (or after adding PDFs) finishes the rest without duplicates. The training
instances end up in WORK/instances/long.jsonl (format: data_tools/schema.py) and the statistics
in WORK/report/.
"""
from __future__ import annotations

import argparse

from data_tools import assemble, common, layout, render, report, segment, teach

STAGES = (render, layout, segment, teach, assemble, report)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m data_tools.pipeline", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_common_args(parser)
  for stage in STAGES:
    stage.add_args(parser.add_argument_group(stage.__name__.rsplit(".", 1)[-1]))
  args = parser.parse_args(argv)
  common.setup_logging()
  for stage in STAGES:
    stage.run_from_args(args)


if __name__ == "__main__":
  main()
