from qwen3_rag import DEFAULT_INSTRUCTION, TASKS, format_query, format_reranker_input
from qwen3_rag.retrieval.prompts import RERANKER_PREFIX, RERANKER_SUFFIX, resolve_instruction


def test_query_template_has_no_space_after_query():
    assert format_query("What is X?", "Do the task") == "Instruct: Do the task\nQuery:What is X?"
    assert format_query("q") == f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:q"


def test_default_instruction_is_the_web_search_one():
    assert DEFAULT_INSTRUCTION == "Given a web search query, retrieve relevant passages that answer the query"


def test_task_names_keep_the_original_spelling():
    assert TASKS["code_search"] == (
        "Given a question about coding, retrieval code or passage that can solve user's question"
    )
    assert TASKS["multilingual_qa"] == "Retrieval the relevant passage for the given query"
    assert TASKS["scifact"] == "Given a scientific claim, retrieve documents that support or refute the claim"
    assert TASKS["similarity"] == "Retrieve semantically similar text"


def test_resolve_instruction_accepts_names_text_and_none():
    assert resolve_instruction(None) == DEFAULT_INSTRUCTION
    assert resolve_instruction("scifact") == TASKS["scifact"]
    assert resolve_instruction("Find cats") == "Find cats"


def test_reranker_golden_string():
    expected = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
        "<Instruct>: I\n<Query>: Q\n<Document>: D"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert format_reranker_input("Q", "D", "I") == expected
    assert RERANKER_PREFIX + "<Instruct>: I\n<Query>: Q\n<Document>: D" + RERANKER_SUFFIX == expected
