"""Layout backend that sends a page image to a vision-language model (for pages without text).

The model is asked for a JSON array of blocks in reading order, each with a label from
layout_parse.LABELS, a bbox in 0-1000 coordinates relative to the page image, and the text.
Boxes are converted to PDF points so that both backends produce the same block format.
"""
from __future__ import annotations

import json
import re
from typing import Any

from data_tools import chat_client, layout_parse

PROMPT = """You are a document layout parser. Read the page image and return every text element \
on it as a JSON array, in the order a person would read the page. Each element is an object:
{"label": <one of "title", "section_heading", "paragraph", "table", "figure_caption", "header", \
"footer">, "bbox": [x0, y0, x1, y1], "text": <the exact text>}
- bbox corners are integers from 0 to 1000, relative to the image width and height, origin top-left.
- "title" is the document title; "section_heading" any heading; "header"/"footer" running text \
in the top/bottom margin such as page numbers.
- For a table, write one row per line with cells separated by " | ".
- Transcribe the text exactly as printed, in its original language. Do not translate or summarize.
Return only the JSON array, with no other text. Return [] for a page without text."""


def request(image_path: str) -> list[dict[str, Any]]:
  """The chat messages that ask for one page's blocks."""
  return [chat_client.user_msg([chat_client.image_part(image_path), PROMPT])]


def parse_reply(text: str, width_pt: float, height_pt: float) -> list[dict[str, Any]]:
  """Blocks from the model's reply; raises ValueError when it is not a usable JSON array."""
  match = re.search(r"\[.*\]", text, re.DOTALL)
  if not match:
    raise ValueError("no JSON array in the reply")
  items = json.loads(match.group(0))
  if not isinstance(items, list):
    raise ValueError("the reply is not a JSON array")
  blocks = []
  for item in items:
    if not isinstance(item, dict) or not str(item.get("text", "")).strip():
      continue
    label = item.get("label")
    box = item.get("bbox")
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) for v in box)):
      box = [0, 0, 1000, 1000]
    x0, y0, x1, y1 = (min(max(float(v), 0.0), 1000.0) / 1000.0 for v in box)
    block = {"label": label if label in layout_parse.LABELS else "paragraph",
             "text": " ".join(str(item["text"]).split()) if label != "table" else str(item["text"]),
             "bbox": [round(x0 * width_pt, 2), round(y0 * height_pt, 2),
                      round(x1 * width_pt, 2), round(y1 * height_pt, 2)]}
    if block["label"] == "table":
      block["rows"] = [[c.strip() for c in row.split("|")] for row in block["text"].splitlines()]
    block["order"] = len(blocks)
    blocks.append(block)
  return blocks
