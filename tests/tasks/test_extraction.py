"""Answer extraction and metrics of the `_gen` protocol on real-looking messy model outputs."""

from __future__ import annotations

import pytest

from harness.tasks import utils

XNLI_EN = {
    "prompt": "Premise: They told me that I would be called in.\nHypothesis: I was never told anything.\n\n"
    "What do you think is the relationship between the premise and the hypothesis?\n\n"
    "(1) Entail \n(2) Neutral\n(3) Contradict\n\n"
    "If you have to choose one of these options, your answer would be:",
    "answer": "3",
}
XNLI_ZH = {
    "prompt": "前提：他们告诉我会有人叫我。\n假设：从来没有人告诉我任何事。\n\n你认为前提和假设之间的关系是什么？\n\n"
    "(1) 蕴涵\n(2) 中立\n(3) 矛盾\n\n如果你必须选择其中一个选项，你的答案是：",
    "prompt_en": XNLI_EN["prompt"],
    "answer": "3",
}
XNLI_SW = {
    "prompt": "Nguzo: Waliniambia.\nNadharia: Sikuwahi kuambiwa.\n\nUnafikiri kuna uhusiano gani kati ya dhana na dhana?"
    "\n\n(1) Inajumuisha\n(2) Kuegemea upande wowote\n(3) Kupingana\n\n"
    "Ikiwa itabidi uchague moja ya chaguzi hizi, jibu lako litakuwa:",
    "prompt_en": XNLI_EN["prompt"],
    "answer": "3",
}
XNLI_AR = {"prompt": "المقدمة: ...\n\n(1) يستلزم\n(2) محايد\n(3) يتناقض\n\nإجابتك ستكون:", "answer": "3"}
XNLI_HI = {"prompt": "आधार: ...\n\n(1) निहित\n(2) तटस्थ\n(3) विरोधाभास\n\nआपका उत्तर होगा:", "answer": "2"}
STORY = {
    "prompt": "I became a Law and Order fan in 2011.It was hard trying to binge watch 20 Year's of a show.\n"
    "(1) I think Law and Order is one of the worst shows ever made.\n(2) Eventually I watched them all.\n\n"
    "Which of the two options is more likely to be the ending of the given story.\nYour answer:",
    "answer": "2",
}
MMMLU_I = {
    "prompt": "Please answer the following multiple choice question.\n\n"
    "The inverse of -i in the multiplicative group, {1, -1, i , -i} is\n(A) 1\n(B) -1\n(C) i\n(D) -i\n\n"
    "If you have to choose one of these options, your answer would be:",
    "answer": "C",
}
MMMLU_DEGREE = {
    "prompt": "다음의 객관식 질문에 답하세요.\n\nQ(sqrt(2) + sqrt(3))의 차수를 구하십시오.\n"
    "(1) Cu2+ + e- → Cu+ (2) Cu+ + e- → Cu0\n(A) 0\n(B) 4\n(C) 2\n(D) 6\n\n답은 다음과 같습니다.",
    "answer": "B",
}
MMMLU_LOGIC = {
    "prompt": "Select the best translation into predicate logic.\n"
    "(A) (~F ⊃ E) ∨ (C ≡ ~S)\n(B) The UDHR is a UN General Assembly resolution\n"
    "(C) (~F ⊃ E) ∨ (C ≡ S)\n(D) ~(F ⊃ E) ∨ (S ⊃ C)\n\nYour answer:",
    "answer": "D",
}

OPTION_CASES = [
    # (doc, output, extracted)
    (XNLI_EN, "2", "2"),
    (XNLI_EN, "(2)", "2"),
    (XNLI_EN, "2.", "2"),
    (XNLI_EN, "Answer: 2", "2"),
    (XNLI_EN, "The answer is (3) Contradict.", "3"),
    (XNLI_EN, "(1) Entail", "1"),
    (XNLI_EN, "1) Entail, because the premise says so", "1"),
    (XNLI_EN, "  **2**  ", "2"),
    (XNLI_EN, "Your answer would be: (1)", "1"),
    (XNLI_EN, "Option 3", "3"),
    (XNLI_EN, "My answer is 3, not 1", "3"),
    (XNLI_EN, "I think the answer is 2 because the hypothesis adds information", "2"),
    (XNLI_EN, "Neutral", "2"),
    (XNLI_EN, "neutral.", "2"),
    (XNLI_EN, "The relationship is entailment.", "1"),
    (XNLI_EN, "Contradiction. The hypothesis says the opposite.", "3"),
    (XNLI_EN, "２", "2"),
    (XNLI_EN, "（３）", "3"),
    (XNLI_EN, "③", "3"),
    (XNLI_EN, "(٢)", "2"),
    (XNLI_EN, "उत्तर: २", "2"),
    (XNLI_EN, "12 people were there", ""),
    (XNLI_EN, "In 2011 they met", ""),
    (XNLI_EN, "The score was 2.5 points", ""),
    (XNLI_EN, "(1) Entail\n(2) Neutral\n(3) Contradict", ""),
    (XNLI_EN, "", ""),
    (XNLI_EN, "I don't know.", ""),
    (XNLI_ZH, "矛盾", "3"),
    (XNLI_ZH, "答案是：(3)", "3"),
    (XNLI_ZH, "我认为是中立的。", "2"),
    (XNLI_ZH, "（２）中立", "2"),
    (XNLI_ZH, "答案：1", "1"),
    (XNLI_ZH, "Contradict", "3"),  # English option text in a Chinese task
    (XNLI_SW, "Kupingana", "3"),
    (XNLI_SW, "Jibu: (2) Kuegemea upande wowote", "2"),
    (XNLI_SW, "kuegemea upande wowote", "2"),
    (XNLI_SW, "Inajumuisha.", "1"),
    (XNLI_AR, "الإجابة هي (٣) يتناقض", "3"),
    (XNLI_AR, "محايد", "2"),
    (XNLI_HI, "तटस्थ", "2"),
    (XNLI_HI, "उत्तर (१) निहित है", "1"),
    (STORY, "2", "2"),
    (STORY, "(1)", "1"),
    (STORY, "Eventually I watched them all.", "2"),
    (STORY, "The ending: i think law and order is one of the worst shows ever made", "1"),
    (STORY, "Option 2 is more likely.", "2"),
    (STORY, "Both (1) and (2) are possible", ""),
    (STORY, "The second one", ""),
    (MMMLU_I, "B", "B"),
    (MMMLU_I, "(b)", "B"),
    (MMMLU_I, "The answer is (C)", "C"),
    (MMMLU_I, "C) i", "C"),
    (MMMLU_I, "[C]", "C"),
    (MMMLU_I, "【B】", "B"),
    (MMMLU_I, "Ⓒ", "C"),
    (MMMLU_I, "'B'", "B"),
    (MMMLU_I, "**C**", "C"),
    (MMMLU_I, "The correct answer is: **D) -i**", "D"),
    (MMMLU_I, "Option C", "C"),
    (MMMLU_I, "Answer: d", "D"),
    (MMMLU_I, "a", "A"),
    (MMMLU_I, "I'd say B is correct", "B"),
    (MMMLU_I, "I think B", "B"),
    (MMMLU_I, "-i", "D"),
    (MMMLU_I, "i", "C"),
    (MMMLU_I, "答案是Ｃ", "C"),
    (MMMLU_I, "정답은 C입니다", "C"),
    (MMMLU_I, "সঠিক উত্তর হবে (B)", "B"),
    (MMMLU_I, "सही उत्तर C है", "C"),
    (MMMLU_I, "A man walks into a bar", ""),
    (MMMLU_I, "B12 vitamin", ""),
    (MMMLU_I, "B-cell", ""),
    (MMMLU_I, "(A) 1 (B) -1 (C) i (D) -i", ""),
    (MMMLU_I, "The answer is a UN resolution", ""),
    (MMMLU_LOGIC, "~(F ⊃ E) ∨ (S ⊃ C)", "D"),  # the "C)" inside the copied option text is not C
    (MMMLU_LOGIC, "The UDHR is a UN General Assembly resolution.", "B"),
    (MMMLU_LOGIC, "(~F ⊃ E) ∨ (C ≡ S)", "C"),
    (MMMLU_DEGREE, "4", "B"),
    (MMMLU_DEGREE, "The degree is 4.", "B"),
    (MMMLU_DEGREE, "The degree is 14", ""),
    (MMMLU_DEGREE, "2.5", ""),
    (MMMLU_DEGREE, "(B) 4", "B"),
]


@pytest.mark.parametrize(("doc", "output", "expected"), OPTION_CASES)
def test_option_extraction(doc: dict, output: str, expected: str) -> None:
    benchmark = "mmmlu" if doc["answer"] in "ABCD" else "xstorycloze" if doc is STORY else "xnli"
    assert utils.extract_answer(benchmark, doc, output) == expected


def test_parse_options_takes_the_last_block() -> None:
    assert utils.parse_options(MMMLU_DEGREE["prompt"], "ABCD") == {"A": "0", "B": "4", "C": "2", "D": "6"}
    assert utils.parse_options(XNLI_EN["prompt"], "123") == {"1": "Entail", "2": "Neutral", "3": "Contradict"}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Sports", "sports"),
        ("sport", "sports"),
        ("The topic is science.", "science/technology"),
        ("technology", "science/technology"),
        ("Topic: health", "health"),
        ("Politics.", "politics"),
        ("entertainment", "entertainment"),
        ("It is about travel and tourism", "travel"),
        ("GEOGRAPHY", "geography"),
        ("Ｓｐｏｒｔｓ", "sports"),
        ("science/technology, travel, politics, sports, health, entertainment, geography", ""),
        (
            "Choose one of: science/technology, travel, politics, sports, health, entertainment, "
            "geography.\nTopic: travel",
            "travel",
        ),
        ("transport", ""),
        ("Michezo", ""),
    ],
)
def test_topic_extraction(output: str, expected: str) -> None:
    assert utils.extract_topic(output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("18", "18"),
        ("The answer is $18.", "18"),
        ("18.0", "18"),
        ("1,234.0", "1234"),
        ("The total is 2,125 dollars", "2125"),
        ("$114,200", "114200"),
        ("It costs 276.000 €", "276000"),
        ("5.600", "5600"),
        ("5 600 руб", "5600"),
        ("0.125", "0.125"),
        ("3,5 kg", "3.5"),
        ("-5 degrees", "-5"),
        ("−7", "-7"),
        ("3-5", "5"),
        ("١٨", "18"),
        ("১৮ টাকা", "18"),
        ("१८", "18"),
        ("１８", "18"),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.", "18"),
        ("Она заработает 18 долларов.", "18"),
        ("答案是18美元。", "18"),
        ("no number here", ""),
    ],
)
def test_number_extraction(output: str, expected: str) -> None:
    assert utils.extract_number(output) == expected


def test_same_number() -> None:
    assert utils.same_number("18", "18.0")
    assert utils.same_number("2125", "2,125")
    assert not utils.same_number("17", "18")
    assert not utils.same_number("", "18")


def test_mgsm_score() -> None:
    doc = {"answer": "2,125"}
    assert utils.score("mgsm", doc, "So she pays 2125 dollars.") == 1.0
    assert utils.score("mgsm", doc, "2,125 + 10 = 2,135") == 0.0


@pytest.mark.parametrize(
    ("answer", "output", "expected"),
    [
        ("308", "The Panthers defense gave up 308 points.", 1.0),
        ("308", "They surrendered three hundred points", 0.0),
        ("Kawann Short", "kawann short!", 1.0),
        ("Kawann Short", "It was Kawann\n  Short.", 1.0),
        ("卡万·肖特", "答案是卡万肖特。", 1.0),
        ("Denver Broncos", "The Denver Broncos won.", 1.0),
        ("Denver Broncos", "The Broncos", 0.0),
        (["3.0"], "3 episodes", 1.0),
        (["ニューヨーク", "アメリカ合衆国"], "アメリカ合衆国です", 1.0),
        (["1999"], "In 1999.", 1.0),
        (["1999"], "In 1998.", 0.0),
    ],
)
def test_span_containment(answer: str | list[str], output: str, expected: float) -> None:
    benchmark = "mkqa" if isinstance(answer, list) else "xquad"
    assert utils.score(benchmark, {"answer": answer}, output) == expected


def test_span_extraction_names_the_gold_found() -> None:
    doc = {"answer": ["ニューヨーク", "アメリカ合衆国"]}
    assert utils.extract_answer("mkqa", doc, "アメリカ合衆国です") == "アメリカ合衆国"
    assert utils.extract_answer("mkqa", {"answer": ["3.0"]}, "3 episodes") == "3.0"
    assert utils.extract_answer("xquad", {"answer": "308"}, "no idea") == ""


def test_rouge_l_known_values() -> None:
    assert utils.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert utils.rouge_l("The Cat", "the cat") == 1.0
    assert utils.rouge_l("dogs bark", "the cat sat") == 0.0
    assert utils.rouge_l("", "the cat") == 0.0
    # LCS 5 of 5 predicted and 6 reference tokens: F1 = 2 * 1 * 5/6 / (1 + 5/6) = 10/11
    assert utils.rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # Chinese, one token per character: 我 喜 欢 | 猫 vs 狗 -> LCS 3 of 4 and 4: F1 = 0.75
    assert utils.rouge_l("我喜欢狗", "我喜欢猫") == pytest.approx(0.75)
    # Thai, one token per character (marks included): หมากินปลา vs แมวกินปลา, 9 tokens each,
    # LCS = ม ก ิ น ป ล า = 7 -> F1 = 7/9
    assert utils.rouge_l("หมากินปลา", "แมวกินปลา") == pytest.approx(7 / 9)


def test_rouge_tokens_every_script() -> None:
    assert utils.rouge_tokens("हिन्दी भाषा, Tôi yêu 東京タワー!") == [
        "हिन्दी",
        "भाषा",
        "tôi",
        "yêu",
        "東",
        "京",
        "タ",
        "ワ",
        "ー",
    ]
    assert utils.rouge_tokens("Привет, МИР") == ["привет", "мир"]
    assert utils.rouge_tokens("ఇవ్వ\u200cబడిన") == ["ఇవ్వబడిన"]  # ZWNJ does not split a word


def test_xlsum_score_and_extraction() -> None:
    doc = {"answer": "Beyonce's pregnancy photo is the most liked on Instagram."}
    assert utils.score("xlsum", doc, doc["answer"]) == 1.0
    assert utils.extract_answer("xlsum", doc, "  A photo\n of Beyonce ") == "A photo of Beyonce"


def test_process_results_gen_reports_the_benchmark_metric() -> None:
    doc = {**XNLI_EN, "benchmark": "xnli"}
    assert utils.process_results_gen(doc, ["(3) Contradict"]) == {"acc": 1.0}
    assert utils.process_results_gen(doc, ["2"]) == {"acc": 0.0}
    summary = {"benchmark": "xlsum", "answer": "a b c d"}
    assert utils.process_results_gen(summary, ["a b x y"]) == {"rougeL": pytest.approx(0.5)}
    topic = {"benchmark": "sib200", "answer": "sports"}
    assert utils.process_results_gen(topic, ["Topic: sports"]) == {"acc": 1.0}


def test_mc_hooks() -> None:
    assert utils.mc_choices({"benchmark": "xstorycloze"}) == ["1", "2"]
    assert utils.mc_target({"benchmark": "mmmlu", "answer": "C"}) == 2
    assert utils.mc_target({"benchmark": "sib200", "answer": "geography"}) == 6
