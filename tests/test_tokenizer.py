from labkit import tokenizer as labtok


def test_committed_tokenizer_roundtrips_and_has_fixed_ids():
    tok = labtok.load_tokenizer()
    assert len(tok) == labtok.VOCAB_SIZE
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    text = "The capital of Veloria is Marden. 23 - 20 = 3! {weird} ünïcode"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: any string survives
    assert len(ids) < len(text.encode())  # and BPE compresses it


def test_chat_template_and_assistant_mask():
    tok = labtok.load_tokenizer()
    msgs = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "2 plus 3 is 5."}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|bos|><|user|>\nAdd 2 and 3.<|end|>\n<|assistant|>\n2 plus 3 is 5.<|end|>\n"
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "2 plus 3 is 5.<|end|>"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")


def test_end_of_turn_ids():
    tok = labtok.load_tokenizer()
    assert labtok.end_of_turn_ids(tok) == [2, tok.convert_tokens_to_ids("<|end|>")]


def test_training_is_deterministic_on_a_small_corpus():
    texts = ["the cat sat on the mat", "the dog sat on the log"] * 50
    a = labtok.train_tokenizer(texts, vocab_size=300)
    b = labtok.train_tokenizer(texts, vocab_size=300)
    assert a.get_vocab() == b.get_vocab()
