"""Instruction templates shared by the SIB-200 task and the `mini-parallel` training recipe.

Templates are English (the instruction wrapper) around native-language content; the English
parallel of an instruction is the same template around the English sentence. Keeping one template
for training and testing is deliberate: SIB-200 is the in-domain probe where a CPU-sized model can
show real differences between methods.
"""

SIB_TOPICS: tuple[str, ...] = (
    "science/technology",
    "travel",
    "politics",
    "sports",
    "health",
    "entertainment",
    "geography",
)

# Options are numbered, as in the paper's XNLI / XStoryCloze prompts, and the answer is the option
# number: a one-token answer lets lm-eval score all 7 options of an item with one forward pass (its
# logits cache), 7x cheaper than ranking the multi-token topic names, which matters on a CPU.
SIB_PROMPT = (
    "What is the topic of the following sentence?\n\n{text}\n\n"
    + "".join(f"({i}) {topic}\n" for i, topic in enumerate(SIB_TOPICS, 1))
    + "\nAnswer with the number of the topic."
)


def sib_answer(topic: str) -> str:
    """The option number ("1".."7") of a SIB-200 topic label."""
    return str(SIB_TOPICS.index(topic) + 1)

TRANSLATE_TO_EN_PROMPT = "Translate the following sentence into English.\n\n{text}"
