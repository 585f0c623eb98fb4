"""The generated sample: a synthetic, learnable stand-in for train.csv in the competition's format, for runs
and tests without the competition data."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from arena.data.cells import DataError
from arena.data.files import canonical
from arena.task import THREE_WAY, Task

# formatting) that shows in its text; a latent score from those plus judge noise picks the winner, with a
# tie when the scores are close or both sides are bad.

_MODELS = [  # name, skill (shifts topicality, length and formatting), refusal rate
    ("gpt-4-1106-preview", 0.8, 0.02), ("gpt-4-0613", 0.6, 0.03), ("claude-2.1", 0.4, 0.08),
    ("claude-instant-1", 0.2, 0.05), ("gpt-3.5-turbo-0613", 0.2, 0.04), ("mixtral-8x7b-instruct-v0.1", 0.3, 0.03),
    ("llama-2-70b-chat", 0.0, 0.15), ("llama-2-13b-chat", -0.2, 0.15), ("vicuna-13b", -0.2, 0.04),
    ("mistral-7b-instruct", -0.3, 0.03), ("zephyr-7b-beta", -0.3, 0.03), ("gemma-7b-it", -0.4, 0.08),
    ("koala-13b", -0.6, 0.05), ("oasst-pythia-12b", -0.7, 0.05), ("chatglm-6b", -0.8, 0.06),
]

_REFUSALS = [
    "I'm sorry, I can't help with that.",
    "I'm sorry, but I can't assist with that request.",
    "As an AI language model, I cannot help with this request.",
    "I apologize, but I am not able to provide that.",
]
_REFUSAL_TAILS = ["", "", " Is there something else I can help you with?",
                  " Please consult a qualified professional instead.", " I hope you understand."]
_OPENERS = ["", "", "Sure! ", "Great question! ", "Certainly. ", "Of course! ", "Here is what I would suggest. "]
_CLOSERS = ["", "", "Let me know if you have any other questions.", "I hope this helps!", "Good luck!",
            "Feel free to ask if anything is unclear."]
_FILLER = [
    "There are many different ways to look at this, and people often disagree.",
    "It really depends on what you are trying to achieve and on your situation.",
    "This is a common question, and the answer is not always simple.",
    "In general, it is a good idea to consider all of the options carefully.",
    "Many people have asked about this over the years, and opinions vary a lot.",
    "Of course, everyone is different, so what works for one person may not work for another.",
    "History shows that things like this change over time in surprising ways.",
    "The weather, the economy and many other factors can play a role as well.",
    "Some experts recommend doing more research before making any decision.",
    "It is also worth remembering that there is no single right answer here.",
    "My favourite season is autumn, when the leaves change colour.",
    "Technology keeps moving quickly, and new tools appear every year.",
]

_CODE = {
    "Python": "```python\ndef {fn}(items):\n    \"\"\"{Task}.\"\"\"\n    result = []\n    for item in items:\n"
              "        result.append(item)\n    return result\n```",
    "JavaScript": "```javascript\nfunction {fn}(items) {\n  // {task}\n  const result = [];\n"
                  "  for (const item of items) {\n    result.push(item);\n  }\n  return result;\n}\n```",
    "Go": "```go\n// {fn}: {task}\nfunc {fn}(items []int) []int {\n\tresult := make([]int, 0, len(items))\n"
          "\tfor _, item := range items {\n\t\tresult = append(result, item)\n\t}\n\treturn result\n}\n```",
    "Rust": "```rust\n/// {Task}.\nfn {fn}(items: &[i32]) -> Vec<i32> {\n    let mut result = Vec::new();\n"
            "    for item in items {\n        result.push(*item);\n    }\n    result\n}\n```",
    "Java": "```java\n// {Task}\npublic static List<Integer> {fn}(List<Integer> items) {\n"
            "    List<Integer> result = new ArrayList<>();\n    for (int item : items) {\n"
            "        result.add(item);\n    }\n    return result;\n}\n```",
}

# Each topic: prompts, subjects (slot values; `kw` are the words that mark an on-topic sentence), on-topic
# sentences, list items (the formatted variant) and follow-up turns.
_TOPICS = {
    "coding": {
        "prompts": ["How do I {task} in {lang}?", "Write a {lang} function to {task}.",
                    "What's the cleanest way to {task} in {lang}? Mine works but it is slow.",
                    "Can you explain how to {task} using {lang}?"],
        "subjects": [
            {"task": "reverse a linked list", "thing": "linked list", "fn": "reverse_list"},
            {"task": "remove duplicates from a list", "thing": "list", "fn": "remove_duplicates"},
            {"task": "merge two sorted arrays", "thing": "sorted arrays", "fn": "merge_sorted"},
            {"task": "parse a CSV file", "thing": "CSV file", "fn": "parse_csv"},
            {"task": "count word frequencies in a text", "thing": "word counts", "fn": "count_words"},
            {"task": "implement binary search", "thing": "binary search", "fn": "binary_search"},
            {"task": "flatten a nested list", "thing": "nested list", "fn": "flatten"},
            {"task": "validate an email address", "thing": "email address", "fn": "is_valid_email"},
        ],
        "extra": {"lang": list(_CODE)},
        "sentences": [
            "To {task} in {lang}, walk through the {thing} once and keep track of where you are.",
            "The important part is to handle an empty {thing} before anything else.",
            "In {lang} this takes only a few lines, and it runs in linear time.",
            "A common mistake when you {task} is to modify the {thing} while iterating over it.",
            "Test the function on a small {thing} first to make sure it behaves as expected.",
            "If performance matters, avoid copying the {thing}; {lang} lets you work in place.",
            "The function {fn} below shows how to {task} in idiomatic {lang}.",
        ],
        "items": ["Check the input {thing} before you start.", "Loop over the {thing} once.",
                  "Return the result instead of printing it.", "Add a test for the edge cases of {fn}."],
        "followups": ["Can you add comments to the code?", "What is the time complexity of this?",
                      "How would I write a unit test for {fn}?", "Can you do it without a loop?"],
    },
    "writing": {
        "prompts": ["Write {piece} about {thing}.", "Can you write {piece} about {thing}? Keep the tone {tone}.",
                    "I need {piece} about {thing} for {occasion}.", "Please write {piece} about {thing}."],
        "subjects": [
            {"thing": "the ocean at night"}, {"thing": "autumn leaves"}, {"thing": "a lost umbrella"},
            {"thing": "my grandmother's kitchen"}, {"thing": "a city waking up"}, {"thing": "morning coffee"},
            {"thing": "a robot learning to paint"}, {"thing": "the first snow of winter"},
        ],
        "extra": {"piece": ["a short poem", "a haiku", "a limerick", "a short story", "a toast"],
                  "tone": ["warm", "funny", "serious", "nostalgic", "hopeful"],
                  "occasion": ["a class assignment", "my sister's birthday", "our team newsletter"]},
        "sentences": [
            "Here is {piece} about {thing}, with a {tone} tone.",
            "Soft light falls on {thing}, and the moment feels {tone} and new.",
            "Every line circles back to {thing}, quiet and {tone}.",
            "I kept the language simple so that the image of {thing} stays clear.",
            "The ending returns to {thing}, so {piece} feels complete.",
            "We remember {thing} long after the day has gone.",
        ],
        "items": ["Title: {Thing}", "Oh, {thing}, you stay with me.", "I think of {thing} and smile.",
                  "And still {thing} calls me home."],
        "followups": ["Can you make it shorter?", "Make it a bit more {tone}.", "Can you give it a title?"],
    },
    "math": {
        "prompts": ["{question}", "Quick math question: {question}", "{question} Please show your work.",
                    "Can you help me with this? {question}"],
        "subjects": [
            {"question": "What is 15% of 240?", "thing": "percent", "ans": "36", "method": "0.15 x 240"},
            {"question": "What is 35% of 80?", "thing": "percent", "ans": "28", "method": "0.35 x 80"},
            {"question": "Solve for x: 3x + 7 = 22.", "thing": "equation", "ans": "x = 5",
             "method": "subtracting 7 and dividing by 3"},
            {"question": "Solve for x: 5x - 4 = 31.", "thing": "equation", "ans": "x = 7",
             "method": "adding 4 and dividing by 5"},
            {"question": "In how many ways can 5 different books be arranged on a shelf?", "thing": "books",
             "ans": "120", "method": "the factorial 5! = 5 x 4 x 3 x 2 x 1"},
            {"question": "What is the derivative of x^3?", "thing": "derivative", "ans": "3x^2",
             "method": "the power rule"},
            {"question": "What is the average of 4, 8, 15 and 23?", "thing": "average", "ans": "12.5",
             "method": "adding the numbers and dividing by 4"},
            {"question": "What is the area of a circle with radius 3?", "thing": "circle",
             "ans": "about 28.27", "method": "the formula pi x r^2"},
        ],
        "extra": {},
        "sentences": [
            "The answer is {ans}.", "We can solve this {thing} problem step by step using {method}.",
            "Using {method}, the result comes out to {ans}.",
            "To check the {thing} result, plug {ans} back into the original question.",
            "So the final answer to this {thing} question is {ans}.",
        ],
        "items": ["Write down what the {thing} question gives us.", "Apply {method}.", "The result is {ans}.",
                  "Check the {thing} answer: {ans} is consistent."],
        "followups": ["Can you explain the second step again?", "How would I check that answer?",
                      "Is there a faster way to do this {thing} problem?"],
    },
    "advice": {
        "prompts": ["How can I {task}?", "Any tips to {task}? I've tried a few things already.",
                    "What's the best way to {task}?", "I really want to {task} this year. Where do I start?"],
        "subjects": [
            {"task": "sleep better", "thing": "sleep", "kw2": "bedtime"},
            {"task": "save money on groceries", "thing": "groceries", "kw2": "budget"},
            {"task": "prepare for a job interview", "thing": "interview", "kw2": "questions"},
            {"task": "start running", "thing": "running", "kw2": "pace"},
            {"task": "learn a new language", "thing": "language", "kw2": "vocabulary"},
            {"task": "deal with a difficult coworker", "thing": "coworker", "kw2": "boundaries"},
            {"task": "stay focused when working from home", "thing": "focus", "kw2": "workspace"},
            {"task": "eat healthier", "thing": "meals", "kw2": "vegetables"},
        ],
        "extra": {},
        "sentences": [
            "If you want to {task}, start small and be consistent.",
            "Pay attention to your {kw2}; for {thing} it matters more than most people think.",
            "Many people who try to {task} find it helps to plan their {kw2} ahead of time.",
            "Give yourself a few weeks before judging whether the change in {thing} is working.",
            "Keep short notes on your {thing} so that you can see what works for you.",
            "Talking to someone who managed to {task} can give you practical ideas.",
        ],
        "items": ["Set a clear goal for your {thing}.", "Plan your {kw2} in advance.",
                  "Track your {thing} every week.", "Be patient: it takes time to {task}."],
        "followups": ["What if I only have ten minutes a day?", "Which of those tips matters most?",
                      "How long until I see results with my {thing}?"],
    },
    "trivia": {
        "prompts": ["{question}", "Quick question: {question}", "I was wondering, {question_lc}",
                    "Settle a debate for us: {question_lc}"],
        "subjects": [
            {"question": "What is the capital of Australia?", "thing": "Australia", "ans": "Canberra",
             "fact": "Canberra was chosen as a compromise between Sydney and Melbourne"},
            {"question": "What is the capital of Canada?", "thing": "Canada", "ans": "Ottawa",
             "fact": "Ottawa sits on the border between Ontario and Quebec"},
            {"question": "Who wrote Pride and Prejudice?", "thing": "Pride and Prejudice", "ans": "Jane Austen",
             "fact": "the novel was published in 1813"},
            {"question": "Who wrote One Hundred Years of Solitude?", "thing": "One Hundred Years of Solitude",
             "ans": "Gabriel García Márquez", "fact": "the novel was first published in Spanish in 1967"},
            {"question": "Why is the sky blue?", "thing": "sky", "ans": "Rayleigh scattering of sunlight",
             "fact": "blue light is scattered more than red light by the air"},
            {"question": "How many bones are in the adult human body?", "thing": "bones", "ans": "206",
             "fact": "babies are born with more bones, some of which fuse later"},
            {"question": "What is the largest planet in the solar system?", "thing": "planet",
             "ans": "Jupiter", "fact": "Jupiter is more than twice as massive as all other planets combined"},
            {"question": "When did the Berlin Wall fall?", "thing": "Berlin Wall", "ans": "1989",
             "fact": "the wall had divided the city since 1961"},
        ],
        "extra": {},
        "sentences": [
            "The short answer is {ans}.", "When it comes to the {thing} question, the answer is {ans}.",
            "A related fact: {fact}.", "Many people are surprised to learn that {fact}.",
            "So, to answer your question about {thing}: {ans}.",
        ],
        "items": ["Answer: {ans}.", "Background: {fact}.", "Topic: {thing}."],
        "followups": ["Interesting! Can you tell me more about {thing}?", "How do you know that?",
                      "Is that still true today?"],
    },
}
_TOPIC_WEIGHTS = {"coding": 0.25, "writing": 0.2, "math": 0.15, "advice": 0.2, "trivia": 0.2}

_SLOT = re.compile(r"\{(\w+)\}")


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _fill(template: str, slots: dict) -> str:
    return _SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), template)


@dataclass
class _Style:
    refusal: bool
    topical: float  # probability that a sentence is on topic
    sentences: float  # mean sentences per turn
    formatted: bool  # code block for coding, a list otherwise


def _sample_style(rng: np.random.Generator, skill: float, refusal_rate: float) -> _Style:
    return _Style(
        refusal=bool(rng.random() < refusal_rate),
        topical=float(1 / (1 + math.exp(-(0.6 + 1.5 * skill + rng.normal(0, 1.4))))),
        sentences=float(np.clip(math.exp(rng.normal(math.log(5.0) + 0.3 * skill, 0.8)), 1, 30)),
        formatted=bool(rng.random() < 0.35 + 0.3 * skill),
    )


def _response_turn(rng: np.random.Generator, topic: dict, slots: dict, style: _Style, coding: bool):
    """One turn of a response: (text, on-topic sentences, sentences)."""
    if style.refusal:
        return _pick(rng, _REFUSALS) + _pick(rng, _REFUSAL_TAILS), 0, 1
    n = max(1, int(rng.poisson(style.sentences)))
    on_topic = rng.random(n) < style.topical
    sentences = [_fill(_pick(rng, topic["sentences"] if on else _FILLER), slots) for on in on_topic]
    paragraphs, i = [], 0
    while i < len(sentences):
        size = int(rng.integers(2, 5))
        paragraphs.append(" ".join(sentences[i:i + size]))
        i += size
    if style.formatted:
        if coding:
            block = _fill(_CODE[slots["lang"]], slots)
        else:
            items = [_fill(t, slots) for t in topic["items"]]
            numbered = rng.random() < 0.5
            block = "\n".join(f"{k}. {t}" if numbered else f"- {t}" for k, t in enumerate(items, 1))
        paragraphs.insert(1 if len(paragraphs) > 1 else len(paragraphs), block)
    text = _pick(rng, _OPENERS) + "\n\n".join(paragraphs)
    closer = _pick(rng, _CLOSERS)
    if closer:
        text += "\n\n" + closer
    return text, int(on_topic.sum()), n


def _score(turns: list[tuple[str, int, int]], style: _Style, coding: bool) -> float:
    """Latent quality: topicality, moderate length, formatting; refusals are heavily penalised."""
    words = np.mean([len(text.split()) for text, _, _ in turns])
    topical = np.mean([on / n for _, on, n in turns])
    length = max(1.0 - ((math.log(words) - math.log(110)) / 0.8) ** 2, -3.0)
    fmt = (1.0 if style.formatted else -0.5) if coding else (0.4 if style.formatted else 0.0)
    return 3.0 * topical + length + fmt - (3.0 if style.refusal else 0.0)


_TIE_MARGIN = 0.9  # |score difference| (after judge noise) below which the judge calls a tie
_BAD_SCORE = 0.5  # both sides below this -> tie ("both are bad")
_JUDGE_NOISE = 0.9


# The two-way (WSDM Cup) form is multilingual: a row's language (by these weights) opens its prompt and both responses
# with a line in that language; the rest is the English template, so the signal is the same in every language.
_LANGUAGES = {
    "English": (0.55, "", ""),
    "Russian": (0.12, "Пожалуйста, ответьте подробно.", "Вот мой ответ."),
    "Chinese": (0.1, "请详细回答。", "这是我的回答。"),
    "Spanish": (0.08, "Por favor, responde con detalle.", "Aquí está mi respuesta."),
    "German": (0.06, "Bitte antworte ausführlich.", "Hier ist meine Antwort."),
    "Japanese": (0.05, "詳しく答えてください。", "これが私の答えです。"),
    "Arabic": (0.04, "من فضلك أجب بالتفصيل.", "هذه إجابتي."),
}


def _in_language(rng: np.random.Generator, prompt: list[str], responses: list[list[str]]):
    names = list(_LANGUAGES)
    name = names[rng.choice(len(names), p=[w for w, _, _ in _LANGUAGES.values()])]
    _, ask, answer = _LANGUAGES[name]
    if not ask:
        return name, prompt, responses
    return name, [f"{ask}\n{t}" for t in prompt], [[f"{answer}\n{t}" for t in turns] for turns in responses]


def generate_sample(rows: int, seed: int = 0, task: Task = THREE_WAY) -> pd.DataFrame:
    """A generated, learnable dataset in the competition's format (see the section comment above). A two-way task
    gets the WSDM Cup's form: one turn, no ties (the judge picks the side it scores higher), a `language`."""
    two_way = task.labels == "two-way"
    if rows < 1:
        raise DataError(f"sample: rows={rows}; need at least 1")
    rng = np.random.default_rng(seed)
    topic_names = list(_TOPIC_WEIGHTS)
    topic_p = np.array(list(_TOPIC_WEIGHTS.values()))
    ids = 10_000 + np.cumsum(rng.integers(1, 5000, size=rows))
    records, seen = [], set()
    while len(records) < rows:
        name = topic_names[rng.choice(len(topic_names), p=topic_p)]
        topic, coding = _TOPICS[name], name == "coding"
        slots = dict(_pick(rng, topic["subjects"]))
        for key, options in topic["extra"].items():
            slots[key] = _pick(rng, options)
        for key in list(slots):
            slots[key[0].upper() + key[1:]] = slots[key][:1].upper() + slots[key][1:]
        if "question" in slots:
            slots["question_lc"] = slots["question"][:1].lower() + slots["question"][1:]

        n_turns = 1 if two_way or rng.random() < 0.8 else int(rng.integers(2, 4))
        prompt = [_fill(_pick(rng, topic["prompts"]), slots)]
        followups = list(topic["followups"]) + ["Thanks! Can you give me an example?"]
        for _ in range(n_turns - 1):
            prompt.append(_fill(_pick(rng, followups), slots))

        pair = rng.choice(len(_MODELS), size=2, replace=False)
        sides = []
        for m in pair:
            _, skill, refusal_rate = _MODELS[m]
            style = _sample_style(rng, skill, refusal_rate)
            turns = [_response_turn(rng, topic, slots, style, coding) for _ in range(n_turns)]
            sides.append((turns, _score(turns, style, coding)))
        (turns_a, score_a), (turns_b, score_b) = sides
        if rng.random() < 0.01:  # identical answers happen in the arena; they are ties
            turns_b, score_b = turns_a, score_a

        diff = score_a - score_b + rng.normal(0, _JUDGE_NOISE)
        if turns_a == turns_b and two_way:
            continue
        if not two_way and (turns_a == turns_b or abs(diff) < _TIE_MARGIN or max(score_a, score_b) < _BAD_SCORE):
            label = 2
        else:
            label = 0 if diff > 0 else 1
        response_a = [t for t, _, _ in turns_a]
        response_b = [t for t, _, _ in turns_b]
        language = None
        if two_way:
            language, prompt, (response_a, response_b) = _in_language(rng, prompt, [response_a, response_b])
        key = json.dumps([prompt, response_a, response_b])
        if key in seen:
            continue
        seen.add(key)
        onehot = [0.0] * task.classes
        onehot[label] = 1.0
        records.append({
            "id": str(ids[len(records)]), "model_a": _MODELS[pair[0]][0], "model_b": _MODELS[pair[1]][0],
            "prompt": prompt, "response_a": response_a, "response_b": response_b,
            **dict(zip(task.label_columns, onehot)), **({"language": language} if two_way else {}),
        })
    return canonical(pd.DataFrame(records))

