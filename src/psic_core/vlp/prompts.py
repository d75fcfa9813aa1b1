"""Prompt templates turning a class label into captions; shared by training and zero-shot evaluation."""

TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "{}",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "an image of a {}.",
    "a cropped photo of a {}.",
)


def prompts(label: str, templates=TEMPLATES) -> list[str]:
    return [template.format(label) for template in templates]
