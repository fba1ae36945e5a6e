#!/usr/bin/env python3
"""Renders of conversations by real chat templates, for peft.c's --template (tests/chat/renders.json).

The template strings are the models' own (tokenizer_config.json "chat_template"):
  llama2   meta-llama/Llama-2-7b-chat-hf (and -13b/-70b-chat-hf)
  llama3   meta-llama/Meta-Llama-3-8B-Instruct
  mistral  mistralai/Mixtral-8x7B-Instruct-v0.1 (the v0.1 instruct template: no system role)
  chatml   teknium/OpenHermes-2.5-Mistral-7B (ChatML)
and, for alpaca and vicuna, the jinja template LLaMA-Factory writes into the tokenizer for its `alpaca` and
`vicuna` templates (Template._get_jinja_template in src/llamafactory/data/template.py, ported below from their
slot definitions, eos_token "</s>").

Rendered as transformers' apply_chat_template does: with transformers when it is importable (its own compiled
jinja environment), else with jinja2 set up identically (ImmutableSandboxedEnvironment, trim_blocks=True,
lstrip_blocks=True, raise_exception, bos_token/eos_token passed, add_generation_prompt=False). A template that
raises gives {"error": message}. Run from the repository root:

    python3 tests/make_chat_fixtures.py            # writes tests/chat/renders.json
    python3 tests/make_chat_fixtures.py --check    # renders again and compares with the committed file (PASS/FAIL)
    python3 tests/make_chat_fixtures.py --check --require-transformers   # the same, failing unless transformers renders

On a machine with transformers, --check confirms the committed renders (made with jinja2 if transformers was
missing) equal transformers' own.
"""
import json, os, sys

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
          "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


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

TEMPLATES = {  # name: (template, bos_token, eos_token) as the models' tokenizers pass them
    "alpaca": (ALPACA, "<s>", "</s>"),
    "llama2": (LLAMA2, "<s>", "</s>"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "mistral": (MISTRAL, "<s>", "</s>"),
    "chatml": (CHATML, "<s>", "<|im_end|>"),
    "vicuna": (VICUNA, "<s>", "</s>"),
}

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
    for name, (source, bos, eos) in TEMPLATES.items():
        tpl = compile_template(source)
        for k, conv in enumerate(CONVERSATIONS):
            messages = [{"role": r, "content": c} for r, c in conv]
            entry = {"template": name, "conversation": k, "messages": messages, "bos_token": bos, "eos_token": eos}
            try:
                entry["text"] = tpl.render(messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=False)
            except Exception as e:  # raise_exception in the template
                entry["error"] = str(e)
            out.append(entry)
    return how, out


def main():
    path = os.path.join("tests", "chat", "renders.json")
    how, out = render_all()
    if "--check" in sys.argv:
        ref = json.load(open(path, encoding="utf-8"))["renders"]
        bad = 0
        for a, b in zip(out, ref):
            same = a.get("text") == b.get("text") and ("error" in a) == ("error" in b)
            bad += not same
            print("%s %s conversation %d (%s)" % ("PASS" if same else "FAIL", a["template"], a["conversation"], how))
        print("%s: %d renders, %d differ from %s" % ("PASS" if not bad and len(out) == len(ref) else "FAIL", len(out), bad, path))
        sys.exit(1 if bad or len(out) != len(ref) else 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"rendered_with": how, "templates": {k: v[0] for k, v in TEMPLATES.items()}, "renders": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s: %d renders with %s" % (path, len(out), how))


if __name__ == "__main__":
    main()
