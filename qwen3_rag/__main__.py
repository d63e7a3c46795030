import sys

from qwen3_rag.cli import main

sys.exit(main())
