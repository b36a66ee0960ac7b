"""Reading scores: expected value over number-token logprobs where given, else parsing."""

from __future__ import annotations

import math

from curriculum.curation.scoring import expected_score, parse_score, read_score


def test_parse_score() -> None:
    assert parse_score("85").score == 85
    assert parse_score("Score: 72/100").score == 72
    assert parse_score(" 12.5 because").score == 12.5
    assert not parse_score("I cannot rate this.").ok
    assert "no number" in parse_score("I cannot rate this.").reason
    assert "outside 0-100" in parse_score("250").reason
    assert "outside 0-100" in parse_score("-5").reason


def test_expected_value_over_number_tokens() -> None:
    alternatives = [("80", math.log(0.5)), ("90", math.log(0.25)), (" the", math.log(0.2)),
                    ("70", math.log(0.05))]
    # Renormalised over the numbers: (80*.5 + 90*.25 + 70*.05) / .8
    assert abs(expected_score(alternatives) - (40 + 22.5 + 3.5) / 0.8) < 1e-9
    assert expected_score([("the", 0.0)]) is None


def test_read_score_prefers_logprobs_and_falls_back() -> None:
    tokens = [("Score", [("Score", 0.0)]), (":", [(":", 0.0)]),
              (" 80", [(" 80", math.log(0.6)), (" 20", math.log(0.4))])]
    reading = read_score("Score: 80", tokens)
    assert reading.method == "logprobs" and abs(reading.score - 56.0) < 1e-9
    # A number split over tokens ("8", "5") is parsed, never averaged digit by digit.
    split = [("8", [("8", 0.0), ("9", -1.0)]), ("5", [("5", 0.0)])]
    assert read_score("85", split).method == "text" and read_score("85", split).score == 85
    assert read_score("85", None).score == 85
    assert not read_score("none", tokens).ok
