#!/usr/bin/env python3
"""
Prints the C tables peft.c's tokenizer uses for the regex classes \\p{L}, \\p{N} and \\s of the
Llama 3 / GPT-2 pre-tokenizer patterns: sorted, merged, inclusive code point ranges.

  \\p{L}  general categories Lu Ll Lt Lm Lo
  \\p{N}  general categories Nd Nl No
  \\s     the Unicode White_Space property (PropList.txt; Python's unicodedata has no accessor,
         and str.isspace() differs: it includes U+001C..U+001F), written out below

Python standard library only; the Unicode version is the running Python's unicodedata's:

  python3 tests/gen_unicode_tables.py > tables.c

With --nfc DIR AGE, prints instead the tables of the NFC and NFD normalizers, read from the Unicode Character
Database files in DIR (Debian's package unicode-data puts them in /usr/share/unicode: UnicodeData.txt,
DerivedNormalizationProps.txt, DerivedAge.txt) and limited to the characters of Unicode version AGE. Hugging
Face tokenizers' NFC is the crate unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0.0, so
peft.c's are too: newer characters have class 0 and no decomposition there (Unicode's stability policy keeps
the classes, decompositions and exclusions of older characters the same in every later version, so the 9.0
subset of newer files is 9.0's data):

  unicode_ccc       the nonzero canonical combining classes: lo,hi,class
  unicode_decomp    the canonical decompositions (one level; applied again until none): cp,first,second
                    (second 0 for a singleton)
  unicode_comp      the primary composites: first,second,cp sorted by (first, second): the canonical
                    decompositions into two that are not Full_Composition_Exclusion

Hangul syllables are algorithmic (in peft.c), not in the tables. Before printing, the tables are checked
against the running Python's unicodedata (its own Unicode version) on every code point assigned in both:
NFC and NFD of each character alone, and of each starter followed by each mark it composes with.

  python3 tests/gen_unicode_tables.py --nfc /usr/share/unicode 9.0 > nfc_tables.c
"""

import re
import sys
import unicodedata

WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]


def ranges(prefix):
    out = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
    return out


def emit(name, what, rs, per_line=8):
    print(f"// {what}: {len(rs)} ranges")
    print(f"static const uint32_t {name}[] = {{")
    for i in range(0, len(rs), per_line):
        print("    " + " ".join(f"0x{lo:X},0x{hi:X}," for lo, hi in rs[i:i + per_line]))
    print("};")


def read_ages(folder):
    age = {}
    with open(f"{folder}/DerivedAge.txt") as f:
        for line in f:
            part = line.split("#")[0].split(";")
            if len(part) >= 2:
                lo, _, hi = part[0].strip().partition("..")
                v = tuple(int(x) for x in part[1].strip().split("."))
                for cp in range(int(lo, 16), int(hi or lo, 16) + 1):
                    age[cp] = v
    return age


def read_ucd(folder, max_age):
    ages = read_ages(folder)
    ccc, decomp, assigned = {}, {}, set()
    with open(f"{folder}/UnicodeData.txt") as f:
        for line in f:
            field = line.split(";")
            cp = int(field[0], 16)
            if ages.get(cp, (99,)) > max_age:
                continue
            assigned.add(cp)
            if field[1].endswith(", First>"):  # a range: first ... last (CJK, Hangul, ...), no data of interest
                continue
            if int(field[3]):
                ccc[cp] = int(field[3])
            if field[5] and not field[5].startswith("<"):
                decomp[cp] = [int(x, 16) for x in field[5].split()]
    exclusion = set()
    with open(f"{folder}/DerivedNormalizationProps.txt") as f:
        for line in f:
            part = line.split("#")[0].split(";")
            if len(part) >= 2 and part[1].strip() == "Full_Composition_Exclusion":
                lo, _, hi = part[0].strip().partition("..")
                exclusion.update(cp for cp in range(int(lo, 16), int(hi or lo, 16) + 1) if ages.get(cp, (99,)) <= max_age)
    version = None
    with open(f"{folder}/DerivedNormalizationProps.txt") as f:
        m = re.match(r"# DerivedNormalizationProps-(\d+\.\d+\.\d+)\.txt", f.readline())
        version = m.group(1) if m else "unknown"
    return ccc, decomp, exclusion, assigned, version


# NFD and NFC from the tables, as peft.c computes them (Hangul included), for the check against unicodedata
S_BASE, L_BASE, V_BASE, T_BASE, L_COUNT, V_COUNT, T_COUNT = 0xAC00, 0x1100, 0x1161, 0x11A7, 19, 21, 28


def nfd(cps, ccc, decomp):
    out = []
    def put(c):
        if S_BASE <= c < S_BASE + L_COUNT * V_COUNT * T_COUNT:
            s = c - S_BASE
            out.append(L_BASE + s // (V_COUNT * T_COUNT)); out.append(V_BASE + s % (V_COUNT * T_COUNT) // T_COUNT)
            if s % T_COUNT: out.append(T_BASE + s % T_COUNT)
        elif c in decomp:
            for d in decomp[c]: put(d)
        else:
            out.append(c)
    for c in cps: put(c)
    for i in range(1, len(out)):  # canonical order: stable sort of the runs of nonzero classes
        j = i
        while j > 0 and ccc.get(out[j], 0) and ccc.get(out[j - 1], 0) > ccc.get(out[j], 0):
            out[j], out[j - 1] = out[j - 1], out[j]; j -= 1
    return out


def nfc(cps, ccc, decomp, comp):
    d = nfd(cps, ccc, decomp)
    if not d: return d
    out, starter, last = [d[0]], 0 if not ccc.get(d[0], 0) else None, 0 if not ccc.get(d[0], 0) else 256
    for c in d[1:]:
        cc = ccc.get(c, 0)
        if starter is not None and (last < cc or last == 0):
            a, x = out[starter], None
            if L_BASE <= a < L_BASE + L_COUNT and V_BASE <= c < V_BASE + V_COUNT:
                x = S_BASE + ((a - L_BASE) * V_COUNT + c - V_BASE) * T_COUNT
            elif S_BASE <= a < S_BASE + L_COUNT * V_COUNT * T_COUNT and (a - S_BASE) % T_COUNT == 0 and T_BASE < c < T_BASE + T_COUNT:
                x = a + c - T_BASE
            else:
                x = comp.get((a, c))
            if x is not None:
                out[starter] = x
                continue
        if cc == 0: starter = len(out)
        last = cc
        out.append(c)
    return out


def check_nfc(ccc, decomp, comp, assigned):
    def both(cp):  # assigned in the tables' version and in Python's
        return cp in assigned and unicodedata.category(chr(cp)) != "Cn"
    n = 0
    for cp in range(sys.maxunicode + 1):
        if not both(cp) or 0xD800 <= cp <= 0xDFFF: continue
        s = chr(cp)
        for form, fn in (("NFD", nfd), ("NFC", lambda c, a, b: nfc(c, a, b, comp))):
            got = "".join(map(chr, fn([cp], ccc, decomp)))
            if got != unicodedata.normalize(form, s):
                sys.exit(f"{form}(U+{cp:04X}) differs from unicodedata's")
            n += 1
    marks = sorted({b for (a, b) in comp} | {c for c in ccc if both(c)})
    for (a, b), x in comp.items():
        for m in [b] + marks[:40]:
            if not (both(a) and both(m)): continue
            s = [a, m, b] if m != b else [a, b]
            got = "".join(map(chr, nfc(s, ccc, decomp, comp)))
            if got != unicodedata.normalize("NFC", "".join(map(chr, s))):
                sys.exit(f"NFC of {' '.join(f'U+{c:04X}' for c in s)} differs from unicodedata's")
            n += 1
    return n


def main_nfc(folder, age):
    max_age = tuple(int(x) for x in age.split("."))
    ccc, decomp, exclusion, assigned, version = read_ucd(folder, max_age)
    comp = {tuple(d): cp for cp, d in decomp.items() if len(d) == 2 and cp not in exclusion}
    checked = check_nfc(ccc, decomp, comp, assigned)
    print(f"checked {checked} normalizations against Python's unicodedata {unicodedata.unidata_version}", file=sys.stderr)
    rs = []
    for cp in sorted(ccc):
        if rs and rs[-1][1] == cp - 1 and rs[-1][2] == ccc[cp]: rs[-1][1] = cp
        else: rs.append([cp, cp, ccc[cp]])
    print(f"// generated by tests/gen_unicode_tables.py --nfc from Unicode {version}'s UnicodeData.txt, DerivedNormalizationProps.txt")
    print(f"// and DerivedAge.txt: the characters of Unicode {age} (Hugging Face tokenizers' NFC: unicode-normalization-alignments")
    print(f"// 0.1.12, Unicode 9.0.0); a newer character has class 0 and no decomposition")
    print(f"#define UNICODE_NORM_AGE {max_age[0]}.{max_age[1] if len(max_age) > 1 else 0}")
    print(f"// nonzero canonical combining classes: {len(rs)} ranges lo,hi,class")
    print("static const uint32_t unicode_ccc[] = {")
    for i in range(0, len(rs), 8):
        print("    " + " ".join(f"0x{lo:X},0x{hi:X},{c}," for lo, hi, c in rs[i:i + 8]))
    print("};")
    ds = sorted(decomp.items())
    print(f"// canonical decompositions: {len(ds)} entries cp,first,second (second 0: a singleton)")
    print("static const uint32_t unicode_decomp[] = {")
    for i in range(0, len(ds), 6):
        print("    " + " ".join(f"0x{cp:X},0x{d[0]:X},0x{d[1] if len(d) > 1 else 0:X}," for cp, d in ds[i:i + 6]))
    print("};")
    cs = sorted(comp.items())
    print(f"// primary composites: {len(cs)} entries first,second,cp sorted by (first, second)")
    print("static const uint32_t unicode_comp[] = {")
    for i in range(0, len(cs), 6):
        print("    " + " ".join(f"0x{a:X},0x{b:X},0x{cp:X}," for (a, b), cp in cs[i:i + 6]))
    print("};")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--nfc":
        return main_nfc(sys.argv[2], sys.argv[3])
    print(f"// generated by tests/gen_unicode_tables.py from Unicode {unicodedata.unidata_version}:"
          " inclusive code point ranges lo,hi")
    emit("unicode_letter_ranges", "\\p{L} (Lu Ll Lt Lm Lo)", ranges("L"))
    emit("unicode_number_ranges", "\\p{N} (Nd Nl No)", ranges("N"))
    emit("unicode_space_ranges", "\\s (White_Space)", WHITE_SPACE)


if __name__ == "__main__":
    main()
