import csv
import json

import pytest

from mmprolong_jax.eval import report

U = report.UnitScore

# Table 4 rows of the study: MMProLong (complete) and GPT-5.4 (no SLIDE at 128K).
MMPROLONG = {("mmlongdoc", 64): 36.00, ("longdocurl", 64): 62.69, ("slidevqa", 64): 80.00,
             ("mmlongdoc", 128): 34.19, ("longdocurl", 128): 56.33, ("slidevqa", 128): 77.00}
GPT54 = {("mmlongdoc", 64): 61.56, ("longdocurl", 64): 72.37, ("slidevqa", 64): 87.10,
         ("mmlongdoc", 128): 52.96, ("longdocurl", 128): 73.06}


def test_docqa_averages_match_table4():
  table = report.summarize(MMPROLONG, report.DOC_COLUMNS, [64, 128])
  assert table["64K"]["AVG."] == pytest.approx((36.00 + 62.69 + 80.00) / 3)  # 59.56
  assert table["128K"]["AVG."] == pytest.approx((34.19 + 56.33 + 77.00) / 3)  # 55.84
  assert round(table["AVG."], 2) == 57.70
  gpt = report.summarize(GPT54, report.DOC_COLUMNS, [64, 128])
  assert gpt["128K"]["SLIDE"] is None
  assert round(gpt["128K"]["AVG."], 2) == 63.01 and round(gpt["AVG."], 2) == 69.41


def test_niah_families_average_text_and_image():
  scores = {("retrieval-text", 64): 80.0, ("retrieval-image", 64): 60.0,
            ("counting-text", 64): 10.0, ("reasoning-image", 64): 30.0, ("reasoning-text", 64): 50.0,
            ("retrieval-text", 128): 20.0}
  table = report.summarize(scores, report.NIAH_COLUMNS, [64, 128])
  assert table["64K"] == {"Ret.": 70.0, "Count": 10.0, "Reas.": 40.0, "AVG.": 40.0}
  assert table["128K"] == {"Ret.": 20.0, "Count": None, "Reas.": None, "AVG.": 20.0}
  assert table["AVG."] == pytest.approx((70 + 10 + 40 + 20) / 4)


def test_write_prints_table4_layout_and_files(tmp_path):
  scores = [U("doc", n, k, "judge", v, 100) for (n, k), v in MMPROLONG.items()]
  scores.append(U("doc", "mmlongdoc", 64, "rule", 12.5, 8))
  text = report.write(tmp_path, "MMProLong", scores, [64, 128])
  judge_block, rule_block = text.split("\n\n")
  assert judge_block.splitlines() == [
      "documentQA, LLM judge (official), scores in %",
      "          |               64K               |               128K              |",
      "Model     |  MMLB-D  LD-URL   SLIDE    AVG. |  MMLB-D  LD-URL   SLIDE    AVG. |    AVG.",
      "MMProLong |   36.00   62.69   80.00   59.56 |   34.19   56.33   77.00   55.84 |   57.70",
  ]
  assert rule_block.splitlines()[-1].split("|")[1].split() == ["12.50", "N/A", "N/A", "12.50"]
  data = json.loads((tmp_path / "report.json").read_text())
  assert data["model"] == "MMProLong" and set(data["tables"]) == {"docqa_judge", "docqa_rule"}
  assert data["tables"]["docqa_judge"]["128K"]["LD-URL"] == 56.33
  assert {"benchmark": "doc", "name": "mmlongdoc", "k": 64, "metric": "rule", "score": 12.5,
          "n": 8} in data["units"]
  rows = list(csv.DictReader((tmp_path / "report.csv").open()))
  overall = [r for r in rows if r["table"] == "docqa_judge" and r["length"] == "all"]
  assert overall == [{"table": "docqa_judge", "length": "all", "column": "AVG.", "score": "57.7017"}]
  assert {"table": "docqa_rule", "length": "128K", "column": "SLIDE", "score": ""} in rows
  assert report.write(tmp_path, "m", [], [64]).startswith("no scored examples")
