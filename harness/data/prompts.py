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

# The answer is the topic name, not an option number: measured on the default model (6 languages,
# 240 SIB examples, 2 epochs), SFT on topic names drops the loss to ~0.4 and learns the task, while
# SFT on option numbers stays at the label prior (loss ~1.0, always the majority option). The price is
# that the `_mc` protocol ranks 7 multi-token names (7 forward passes an item); `sib200_gen` is cheap.
SIB_PROMPT = (
    "What is the topic of the following sentence?\n\n{text}\n\n"
    "Choose one of: science/technology, travel, politics, sports, health, entertainment, geography.\n"
    "Topic:"
)

TRANSLATE_TO_EN_PROMPT = "Translate the following sentence into English.\n\n{text}"
