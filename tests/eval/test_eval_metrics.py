import pytest

from mmprolong_jax.eval import metrics


@pytest.mark.parametrize("reply, parsed", [
    (" Paris.\n", "Paris."),
    ("Let me think. Answer: 42", "42"),
    ("answer: Answer: 5", "5"),
    ("", ""),
])
def test_parse_answer(reply, parsed):
  assert metrics.parse_answer(reply) == parsed


@pytest.mark.parametrize("prediction, answer, fmt, score", [
    # Integer: any integer in the reply, commas and units dropped.
    ("There are 12 apples", "12", "Integer", 1.0),
    ("about 12.5", 12, "Integer", 0.0),
    ("1,200 people", "1200", "Integer", 1.0),
    ("12", "12 kg", "Integer", 1.0),
    # Float: within 1% of the reference, or of it as a percentage written the other way.
    ("3.17", "3.2", "Float", 1.0),  # 0.94% off
    ("3.14", "3.2", "Float", 0.0),  # 1.9% off
    ("The ratio is 0.253", "25.3%", "Float", 1.0),
    ("25.3", 0.253, "Float", 1.0),
    # String: token F1 after SQuAD normalisation ...
    ("the red car", "red bicycle", "String", 0.5),
    ("Red bicycle!", "red bicycle", "String", 1.0),
    # ... but verbatim containment where F1 would be too lenient.
    ("see https://x.org/a.", "https://x.org/a", "String", 1.0),
    ("x.org/a", "https://x.org/a", "String", 0.0),
    ("2019-05-01", "2019-05-01", "String", 1.0),
    ("Not answerable.", "Not answerable", "None", 1.0),
    ("Paris", "Not answerable", "None", 0.0),
    # List: words merged into one F1 item (tokens apple|and|2019 vs apple|banana: F1 0.4),
    # the number scored as an Integer (1.0); mean 0.7.
    ("apple and 2019", ["apple", "banana", "2019"], "List", 0.7),
    ("apple and 2019", '["apple", "banana", "2019"]', "List", 0.7),
    ("3 and 5", [3, 4], "List", 0.5),
])
def test_docqa_score(prediction, answer, fmt, score):
  assert metrics.docqa_score(prediction, answer, fmt) == pytest.approx(score)


def test_docqa_score_rejects_bad_references():
  with pytest.raises(ValueError, match="not a number"):
    metrics.docqa_score("1", "many", "Integer")
  with pytest.raises(ValueError, match="answer_format"):
    metrics.docqa_score("1", "1", "Date")


@pytest.mark.parametrize("reply, answer, task, modality, score", [
    ("The key is Blue Moon.", "blue moon", "retrieval", "text", 1.0),
    ("It is Oslo", ["Bergen", "Oslo"], "retrieval", "text", 1.0),
    ("Bergen", "Oslo", "reasoning", "text", 0.0),
    ("[1, 2, 3]", [3, 3], "counting", "text", 1.0),  # counts compared by their sum
    ("The counts are [2, 2] or maybe [1, 1]", [1, 1], "counting", "image", 1.0),  # last list
    ("There are 5", [2, 2], "counting", "image", 0.0),
    ("B", 1, "retrieval", "image", 1.0),
    ("I think the answer is (C).", 2, "reasoning", "image", 1.0),
    ("Answer: A", 1, "reasoning", "image", 0.0),
    ("no idea", 0, "reasoning", "image", 0.0),
])
def test_niah_score(reply, answer, task, modality, score):
  assert metrics.niah_score(reply, answer, task, modality) == score


def test_count_list_and_choice_index():
  assert metrics.count_list("counts: [3, x, 4]") == [3, 4]
  assert metrics.count_list("three then 4 and 5") == [4, 5]
  assert metrics.choice_index("Option D is right. D") == 3
  assert metrics.choice_index("none") == -1
