"""docqa: PDFs in, held-out-evaluated QLoRA adapters out."""

__version__ = "0.1.0"
