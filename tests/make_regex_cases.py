#!/usr/bin/env python3
"""tests/fixtures/regex_cases.json: PEFT-style target_modules regexes against module names, with Python's
re.fullmatch as the answer (what PEFT does with a string target_modules). test_all checks peft.c's matcher on them.

    python3 tests/make_regex_cases.py
"""
import json, re

names = ["model.layers.%d.self_attn.%s" % (l, m) for l in (0, 1, 2, 3, 10, 12) for m in ("q_proj", "k_proj", "v_proj", "o_proj")]
names += ["model.layers.%d.mlp.%s" % (l, m) for l in (0, 3, 11) for m in ("gate_proj", "up_proj", "down_proj")]
names += ["model.embed_tokens", "lm_head", "model.layers.1.self_attn", "model.norm", "", "q_proj", "vision_tower.layers.0.self_attn.q_proj"]
patterns = [
    r".*\.(q_proj|v_proj)", r".*(q|v)_proj", r".*q_proj", r"q_proj", r"model\.layers\.(0|1)\.self_attn\.(q|k)_proj",
    r".*layers\.[0-9]+\.mlp\..*_proj", r".*\.layers\.\d+\.self_attn\.[qkvo]_proj", r".*\.layers\.[1-3]\..*", r"^model\.layers\.\d{2}\..*$",
    r".*\.(?:gate|up|down)_proj", r"(?!.*vision).*self_attn\.(q|v)_proj", r"^(?!.*mlp).*_proj$", r".*(?=\.mlp\.)\.mlp\.up_proj",
    r".*layers\.1[02]?\.self_attn\.[^k]_proj", r"[a-z_.]*", r".*\W(q|k)_proj", r".*?_proj", r"(model\.)?layers\.\d+\..*",
    r".*\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj", r"model\.layers\.(\d)\.self_attn\.q_proj", r"(ab|a)*c?", r"model.layers.1{1,2}\..*",
    r".*\.[0-9]{2,}\..*", r"(.*)(\.)(v_proj)", r"lm_head|model\.embed_tokens", r"(?:(?:model)\.)+layers\..*o_proj", r".*[.]o_proj",
]
cases = [{"pattern": p, "text": n, "match": re.fullmatch(p, n) is not None} for p in patterns for n in names]
cases += [{"pattern": p, "error": True} for p in [r"(unclosed", r"[abc", r"*start", r"a{3,1}", r"\1"]]
with open("tests/fixtures/regex_cases.json", "w") as f:
    json.dump(cases, f, indent=0)
    f.write("\n")
print("wrote tests/fixtures/regex_cases.json: %d cases, %d matches" % (len(cases), sum(c.get("match", False) for c in cases)))
