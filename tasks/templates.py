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

SIB_PROMPT = (
    "What is the topic of the following sentence?\n\n{text}\n\n"
    "Choose one of: science/technology, travel, politics, sports, health, entertainment, geography.\n"
    "Topic:"
)

TRANSLATE_TO_EN_PROMPT = "Translate the following sentence into English.\n\n{text}"
