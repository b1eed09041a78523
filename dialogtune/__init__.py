"""dialogtune: fine-tune FLAN-T5 for dialogue summarization, by full fine-tuning and LoRA, and compare."""

__version__ = "0.1.0"
