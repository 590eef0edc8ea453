"""``python -m demo [--host 127.0.0.1] [--port 7860] [--share] [--model BUNDLE ...]``: open the Gradio app."""

from .app import main

if __name__ == "__main__":
    main()
