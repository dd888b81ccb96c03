"""The QA-generation prompt (structure of the study's Table 12/13, wording our own).

Layout of the prompt: role and goal; the task description; general restrictions (grounded and
certain answers, verifiable absence, a segment anchor in the question, the page-index rule) plus
the task's extra restriction; the response format (evidence description with four evidence types,
then a JSON object whose answer is a String, Integer, Float or List); two in-context exemplars
drawn from a small pool; and the current case with its page images, each labelled "Page N".

Page-index rule: N is the page's 1-based position in the FULL document (the first page of the
PDF is Page 1), not its position inside the segment and not the number printed on the page. The
same numbers appear in the question anchors, in `evidence_pages` and in the training instance,
whose images are all pages of the document in order, so Page N is the N-th image.
"""
from __future__ import annotations

import json
import random
from typing import Any

from data_tools import chat_client

TASKS = ("extract_single", "extract_multi", "reasoning")
ANSWER_FORMATS = ("String", "Integer", "Float", "List")
EVIDENCE_SOURCES = ("Text", "Layout", "Figure", "Table")

_EXTRACTION = (
    "information extraction. Ask for specific information that the page images state "
    "explicitly: a fact, a name, a date, a place, an author, a number, a list of items or the "
    "steps of a procedure. The answer must be printed in the pages and readable directly from "
    "their text, tables or layout elements.")

TASK_DESCRIPTIONS = {
    "extract_single": _EXTRACTION,
    "extract_multi": _EXTRACTION,
    "reasoning": (
        "quantitative reasoning. Ask a question that can only be answered by processing values "
        "found in the pages, in one of three ways: 1. Calculate: do arithmetic on numbers in the "
        "pages. 2. Compare: find a trend, a largest or smallest value, or which of two is bigger. "
        "3. Count: count the items, keywords or visual elements that meet a condition. The "
        "answer must be the result of that processing, not a string printed in the pages."),
}

EXTRA_RESTRICTIONS = {
    "extract_single": (
        "- One page only: several pages are shown for context, but the question must be "
        "answerable from exactly one of them. Pick one page and ask only about what it contains; "
        "answering must not need any other page."),
    "extract_multi": (
        "- Several pages first: prefer a question whose answer brings together information from "
        "two or more different pages, for example a table's header on one page and a row on the "
        "next, or values spread over several pages; other cross-page forms are welcome. Ask about "
        "a single page only when the pages have no meaningful connection."),
    "reasoning": (
        "- Combine several values: the question must need at least two separate pieces of "
        "information that are found and then combined, for example \"By how much did sales "
        "change from 2019 to 2020?\" or \"What is the total of the amounts listed in Table 2?\"."),
}

_ROLE = (
    "You create question-answer pairs for training models to read documents. You will see the "
    "page images of one or more sections of a document; write one question-answer pair grounded "
    "in them. Keep the following in mind.")

_GENERAL = """\
- The question must be answerable with certainty from the given page images alone, without \
outside knowledge.
- If the question asks about something the pages do not contain, the images must make that \
absence certain.
- Scope: tie the question to the given section(s) or pages, for example "in the Methods section" \
or "on Pages 12-14". Never refer to "the whole document", "the entire file" or the like.
- Page numbers: in the evidence description and in "evidence_pages", use the page numbers given \
in this prompt ("Page 12" means 12), not page numbers printed inside the images."""

_FORMAT = """\
Answer in two parts.

Part 1: Evidence description
First explain the evidence, quoting the text and pointing to the visual elements you rely on; \
several paragraphs are fine. Give every piece of evidence one of these four types:
- Text: running text such as paragraphs.
- Layout: text whose position gives it meaning, such as titles, headers, footers, and the names \
of tables and figures.
- Figure: charts, diagrams and pictures.
- Table: data arranged in rows and columns.

Part 2: JSON
Give the question, the answer and their metadata as one strict JSON object. The answer must be of \
one of these four kinds, named in "answer_format":
1. String: text, a name, a phrase or a short sentence from the pages, e.g. "Marie Curie", \
"Annual Report", "The bridge opened in spring."
2. Integer: a whole number such as a count, a year or a page number, e.g. 7, 1998, 250.
3. Float: a number with a decimal part, including money, percentages and measurements, e.g. \
3.75, "$12.40", "61.5%".
4. List: several items, names or values, e.g. ["red", "green"], ["Step 1", "Step 2", "Step 3"].

Write exactly:
[Evidence Description]:
<your evidence description>
[JSON]:
{"question": <question>, "answer": <answer>, "answer_format": <String|Integer|Float|List>, \
"evidence_pages": [<page numbers>], "evidence_sources": [<Text|Layout|Figure|Table>]}"""

# Exemplar pool: text-only worked cases, two drawn per prompt.
EXEMPLARS = {
    "extract_single": [
        ("Pages 31 to 40 (sections \"Recipes\" and \"Storage\")",
         "Page 34 (Text) gives the recipe for lemon syrup; its second step says to simmer the "
         "mixture for 12 minutes.",
         {"question": "In the lemon syrup recipe on Page 34, for how many minutes is the mixture "
          "simmered?", "answer": 12, "answer_format": "Integer", "evidence_pages": [34],
          "evidence_sources": ["Text"]}),
        ("Pages 5 to 14 (section \"Project Team\")",
         "The table on Page 9 (Table) lists team roles; the row \"Data steward\" names Ana Ruiz.",
         {"question": "According to the team table on Page 9, who is the data steward?",
          "answer": "Ana Ruiz", "answer_format": "String", "evidence_pages": [9],
          "evidence_sources": ["Table"]}),
        ("Pages 18 to 26",
         "The caption under the chart on Page 22 (Layout) reads \"Figure 4: Rainfall by month, "
         "2021\".",
         {"question": "What does Figure 4 on Page 22 show?", "answer": "Rainfall by month, 2021",
          "answer_format": "String", "evidence_pages": [22], "evidence_sources": ["Layout"]}),
    ],
    "extract_multi": [
        ("Pages 6 to 19 (section \"Risks\")",
         "Risk factors are named on Page 6 (Text: supply delays), Page 13 (Table: currency "
         "exposure) and Page 19 (Text: staff turnover).",
         {"question": "Based on Pages 6, 13 and 19 of the Risks section, which risk factors are "
          "named?", "answer": ["supply delays", "currency exposure", "staff turnover"],
          "answer_format": "List", "evidence_pages": [6, 13, 19],
          "evidence_sources": ["Text", "Table"]}),
        ("Pages 40 to 48 (section \"Appendix B\")",
         "The table header \"Station\" is on Page 44 (Table) and the table continues on Page 45, "
         "whose last row is station \"Kestrel Point\".",
         {"question": "In the station table of Appendix B that runs over Pages 44 and 45, what is "
          "the last station listed?", "answer": "Kestrel Point", "answer_format": "String",
          "evidence_pages": [44, 45], "evidence_sources": ["Table"]}),
        ("Pages 2 to 10",
         "Section headings (Layout): \"Scope\" on Page 3, \"Methods\" on Page 5, \"Results\" on "
         "Page 8.",
         {"question": "List the section headings that appear on Pages 2-10, in order.",
          "answer": ["Scope", "Methods", "Results"], "answer_format": "List",
          "evidence_pages": [3, 5, 8], "evidence_sources": ["Layout"]}),
    ],
    "reasoning": [
        ("Pages 12 to 20 (section \"Finances\")",
         "The table on Page 15 (Table) gives revenue of 4.2 million in Q1 and 5.0 million in Q2.",
         {"question": "In the Finances section, by how many million did revenue grow from Q1 to "
          "Q2?", "answer": 0.8, "answer_format": "Float", "evidence_pages": [15],
          "evidence_sources": ["Table"]}),
        ("Pages 1 to 9",
         "Figure captions (Layout) appear on Page 2 (Figure 1), Page 4 (Figures 2 and 3) and "
         "Page 9 (Figure 4).",
         {"question": "How many figures are captioned on Pages 1-9?", "answer": 4,
          "answer_format": "Integer", "evidence_pages": [2, 4, 9],
          "evidence_sources": ["Layout", "Figure"]}),
        ("Pages 27 to 35 (section \"Survey Results\")",
         "Page 29 (Table) reports 48% satisfied in 2019; Page 31 (Table) reports 61% in 2022.",
         {"question": "Across the survey tables on Pages 29 and 31 of the Survey Results "
          "section, in which year was the satisfied share higher?", "answer": "2022",
          "answer_format": "String", "evidence_pages": [29, 31],
          "evidence_sources": ["Table"]}),
    ],
}


def format_reply(description: str, qa: dict[str, Any]) -> str:
  """The response format the prompt asks for (also what the rule-based teacher writes)."""
  return f"[Evidence Description]:\n{description}\n[JSON]:\n{json.dumps(qa, ensure_ascii=False)}"


def page_anchor(pages: list[int]) -> str:
  """'Page 4', 'Pages 4 and 6', 'Pages 4-9' (contiguous) or 'Pages 4, 6 and 9'."""
  pages = sorted(set(pages))
  if len(pages) == 1:
    return f"Page {pages[0]}"
  if pages == list(range(pages[0], pages[-1] + 1)) and len(pages) > 2:
    return f"Pages {pages[0]}-{pages[-1]}"
  return "Pages " + ", ".join(map(str, pages[:-1])) + f" and {pages[-1]}"


def system_prompt(task: str, rng: random.Random) -> str:
  """Everything before the current case, with two exemplars drawn by `rng`."""
  shots = rng.sample(EXEMPLARS[task], 2)
  examples = "\n\n".join(
      f"Example {k + 1} ({where}):\n{format_reply(desc, qa)}"
      for k, (where, desc, qa) in enumerate(shots))
  return (f"{_ROLE}\n\n[Task]\nThis document QA task is {TASK_DESCRIPTIONS[task]}\n\n"
          f"[General Restrictions]\n{_GENERAL}\n{EXTRA_RESTRICTIONS[task]}\n\n"
          f"[Response Format]\n{_FORMAT}\n\n[Examples]\n{examples}")


def current_case(segment: dict[str, Any]) -> str:
  start, end = segment["start_page"], segment["end_page"]
  sections = segment.get("sections") or []
  where = f' (sections: {"; ".join(json.dumps(s, ensure_ascii=False) for s in sections)})' \
      if sections else ""
  return (f"[Current Case]\nThe images below are Pages {start} to {end} of the document{where}. "
          "Write the question-answer pair strictly from their visual content, and limit the "
          "question's scope with phrases such as \"in the Introduction section\", \"on Pages 20, "
          "21 and 25\" or \"on Page 10\".")


def build_messages(task: str, segment: dict[str, Any], images: dict[int, str],
                   rng: random.Random) -> list[dict[str, Any]]:
  """Chat messages for one (segment, task): system prompt, then the labelled page images."""
  parts: list[Any] = [current_case(segment)]
  for page in range(segment["start_page"], segment["end_page"] + 1):
    parts += [f"Page {page}:", chat_client.image_part(images[page])]
  return [chat_client.system_msg(system_prompt(task, rng)), chat_client.user_msg(parts)]
