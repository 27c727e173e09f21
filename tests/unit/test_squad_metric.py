"""The SQuAD 2.0 metric on hand-made cases whose values are worked out by hand below."""
from __future__ import annotations

import pytest

from evaluation.squad_v2 import best_threshold, evaluate, exact, f1, gold_answers, normalize_answer, score_question


@pytest.mark.parametrize("text, normalized", [
    ("The  Cat, sat!", "cat sat"),  # lower-case, punctuation, article, white space
    ("An apple a day", "apple day"),
    ("theater Anne another", "theater anne another"),  # articles only as whole words
    ("  U.S.A.\t(1999) ", "usa 1999"),
    ("Café — naïve", "café — naïve"),  # only ASCII punctuation is removed, as in the official script
    ("the", ""),
])
def test_normalisation(text, normalized):
    assert normalize_answer(text) == normalized


def test_f1_of_overlapping_answers():
    # gold [cat, sat], prediction [cat, sat, down]: 2 shared; P = 2/3, R = 2/2; F1 = 2PR/(P+R) = (4/3)/(5/3)
    assert f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert exact("the cat sat", "a cat sat down") == 0
    # gold [denver, broncos], prediction [broncos]: P = 1, R = 1/2; F1 = 1/(3/2)
    assert f1("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    # shared tokens count with multiplicity: gold [x, y, y], prediction [y, y, y, z]: 2 shared;
    # P = 2/4, R = 2/3; F1 = 2 * (1/2) * (2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
    assert f1("x y y", "y y y z") == pytest.approx(4 / 7)
    assert f1("cat", "dog") == 0.0


def test_no_answer_scores_one_only_for_an_empty_prediction():
    for prediction, value in (("", 1), ("something", 0), ("The", 1)):  # "The" normalises to ""
        result = score_question([], prediction)
        assert (result.exact, result.f1, result.has_answer) == (value, float(value), False)
        assert type(result.f1) is float and result.f1 in (0.0, 1.0)
    assert f1("Paris", "") == 0.0 and exact("Paris", "") == 0


def test_gold_answers_that_normalise_to_nothing_do_not_count():
    assert gold_answers(["the", "Paris"]) == ["Paris"]
    assert gold_answers(["a", "."]) == [""]  # only empty answers: a no-answer question
    assert score_question(["a"], "").exact == 1


def test_best_gold_answer_counts():
    result = score_question(["Denver Broncos", "Broncos", "the Denver Broncos team"], "the Broncos")
    assert (result.exact, result.f1) == (1, 1.0)
    # against [denver, broncos]: P = 1/2, R = 1/2, F1 = 1/2; against [denver, broncos, team]: P = 1/2, R = 1/3, F1 = 2/5
    assert score_question(["Denver Broncos", "Denver Broncos team"], "Broncos Stadium").f1 == pytest.approx(0.5)


def test_overall_and_split_scores():
    golds = {"q1": ["Paris"], "q2": ["the cat sat"], "q3": [], "q4": [], "q5": ["never predicted"]}
    predictions = {"q1": "paris", "q2": "a cat sat down", "q3": "", "q4": "x"}
    # q1: EM 1, F1 1 | q2: EM 0, F1 0.8 | q3: 1, 1 | q4: 0, 0 | q5 has no prediction: not counted
    report = evaluate(golds, predictions)
    assert report["total"] == 4 and report["HasAns_total"] == 2 and report["NoAns_total"] == 2
    assert report["exact"] == pytest.approx(100 * 2 / 4)
    assert report["f1"] == pytest.approx(100 * 2.8 / 4)
    assert report["HasAns_exact"] == pytest.approx(50.0) and report["HasAns_f1"] == pytest.approx(90.0)
    assert report["NoAns_exact"] == pytest.approx(50.0) and report["NoAns_f1"] == pytest.approx(50.0)


def test_split_without_questions_has_only_a_count():
    report = evaluate({"q1": ["Paris"]}, {"q1": "Lyon"})
    assert report["NoAns_total"] == 0 and "NoAns_f1" not in report
    assert report["f1"] == 0.0 and report["HasAns_exact"] == 0.0


def test_best_threshold():
    golds = {"q1": ["Paris"], "q2": [], "q3": ["Rome"], "q4": []}
    generated = {"q1": "Paris", "q2": "x", "q3": "Oslo", "q4": ""}
    scores = {"q1": -1.0, "q2": -2.0, "q3": -3.0, "q4": -0.5}
    # Answer only where score >= t. All abstaining: q2, q4 right = 2. Adding by score: q4 (-0.5,
    # empty anyway) 2; q1 (-1) 3; q2 (-2, answers a no-answer question) 2; q3 (-3, wrong) 2.
    assert best_threshold(golds, generated, scores, "f1") == (pytest.approx(75.0), -1.0)
    assert best_threshold(golds, generated, scores, "exact") == (pytest.approx(75.0), -1.0)
    # When answering never helps, abstaining everywhere is best: no threshold.
    assert best_threshold({"q": []}, {"q": "x"}, {"q": -1.0}) == (100.0, None)
