"""arena: LMSYS Chatbot Arena preference prediction (QLoRA sequence classifiers, CV, swap TTA, Kaggle kernels)."""

__version__ = "0.1.0"
