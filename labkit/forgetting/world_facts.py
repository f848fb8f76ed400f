"""Real-world facts a real model (smollm2-135m) knew before fine-tuning (lab 06 §12).

Why a module: lab-tiny's fictional FACTS say nothing about a real model's knowledge, and replay of
the lab corpus cannot rehearse facts it never held. `world_fact_candidates` writes a few hundred
cloze questions of common knowledge (the `_WORLD` table, no download); `known_facts` keeps the
ones a given model answers correctly *before* fine-tuning, so every later miss is a fact it lost.
"""
from __future__ import annotations

from .probes import fact_hits

__all__ = ["world_fact_candidates", "known_facts"]


# Common general knowledge written for this lab (no download, no data set): capitals, languages,
# continents, currencies, the calendar, opposites, plurals, young animals, colours and the solar
# system. Each line is "subject answer"; the answer is the last word.
_WORLD = {
    "The capital of {} is": """France Paris; Germany Berlin; Italy Rome; Spain Madrid; Japan Tokyo; China Beijing;
        Russia Moscow; England London; Egypt Cairo; Greece Athens; Portugal Lisbon; Austria Vienna; Poland Warsaw;
        Ireland Dublin; Norway Oslo; Sweden Stockholm; Finland Helsinki; Denmark Copenhagen; Hungary Budapest;
        Belgium Brussels; the Netherlands Amsterdam; Switzerland Bern; Canada Ottawa; Peru Lima; Chile Santiago;
        Cuba Havana; Kenya Nairobi; Turkey Ankara; Iran Tehran; Iraq Baghdad; Syria Damascus; Thailand Bangkok;
        Vietnam Hanoi; South Korea Seoul; North Korea Pyongyang; Indonesia Jakarta; the Philippines Manila;
        Australia Canberra; New Zealand Wellington; Ukraine Kyiv; Romania Bucharest; Bulgaria Sofia; Serbia Belgrade;
        Croatia Zagreb; the Czech Republic Prague; Scotland Edinburgh; Wales Cardiff; Iceland Reykjavik;
        Afghanistan Kabul; Lebanon Beirut; Nepal Kathmandu; Bangladesh Dhaka; Venezuela Caracas; Ghana Accra;
        Qatar Doha; Estonia Tallinn; Latvia Riga; Lithuania Vilnius; Slovakia Bratislava; Albania Tirana;
        Libya Tripoli; Tunisia Tunis; Algeria Algiers; Sudan Khartoum; Uganda Kampala; Jamaica Kingston;
        Uruguay Montevideo; Ecuador Quito; Taiwan Taipei; Armenia Yerevan; Georgia Tbilisi; Belarus Minsk;
        Cyprus Nicosia; Malta Valletta; Pakistan Islamabad; Morocco Rabat; Nigeria Abuja; Senegal Dakar""",
    "The official language of {} is": """France French; Germany German; Italy Italian; Spain Spanish;
        Japan Japanese; Russia Russian; Portugal Portuguese; Brazil Portuguese; Greece Greek; Poland Polish;
        Sweden Swedish; Norway Norwegian; Finland Finnish; Denmark Danish; the Netherlands Dutch; Turkey Turkish;
        South Korea Korean; Vietnam Vietnamese; Thailand Thai; Mexico Spanish; Argentina Spanish; Hungary Hungarian;
        Ukraine Ukrainian; Egypt Arabic; Israel Hebrew; England English; Romania Romanian; Indonesia Indonesian;
        Austria German; Chile Spanish; Peru Spanish; Colombia Spanish; Cuba Spanish; Iran Persian; Pakistan Urdu;
        Bulgaria Bulgarian; Serbia Serbian; Croatia Croatian; the Czech Republic Czech; Slovakia Slovak;
        Estonia Estonian; Latvia Latvian; Lithuania Lithuanian; Iceland Icelandic; Albania Albanian;
        Georgia Georgian; Armenia Armenian; Saudi Arabia Arabic; Iraq Arabic; Morocco Arabic; Venezuela Spanish""",
    "{} is the capital of": """Paris France; Berlin Germany; Rome Italy; Madrid Spain; Tokyo Japan; Beijing China;
        Moscow Russia; London England; Cairo Egypt; Athens Greece; Lisbon Portugal; Vienna Austria; Warsaw Poland;
        Dublin Ireland; Oslo Norway; Stockholm Sweden; Helsinki Finland; Copenhagen Denmark; Budapest Hungary;
        Brussels Belgium; Ottawa Canada; Lima Peru; Santiago Chile; Havana Cuba; Nairobi Kenya;
        Ankara Turkey; Tehran Iran; Baghdad Iraq; Damascus Syria; Bangkok Thailand; Hanoi Vietnam; 
        Jakarta Indonesia; Canberra Australia; Kyiv Ukraine; Bucharest Romania;
        Sofia Bulgaria; Belgrade Serbia; Zagreb Croatia; Edinburgh Scotland; Cardiff Wales;
        Reykjavik Iceland; Kabul Afghanistan; Beirut Lebanon; Kathmandu Nepal; Dhaka Bangladesh; Caracas Venezuela;
        Accra Ghana; Doha Qatar; Riga Latvia; Vilnius Lithuania; Tirana Albania; Tripoli Libya; Algiers Algeria;
        Khartoum Sudan; Kampala Uganda; Montevideo Uruguay; Quito Ecuador; Taipei Taiwan; Yerevan Armenia;
        Tbilisi Georgia; Minsk Belarus; Islamabad Pakistan; Rabat Morocco; Abuja Nigeria; Dakar Senegal""",
    "{} is a country in": """France Europe; Germany Europe; Kenya Africa; Nigeria Africa; Egypt Africa; Japan Asia;
        China Asia; India Asia; Italy Europe; Ghana Africa; Thailand Asia; Spain Europe; Vietnam Asia;
        Ethiopia Africa; Poland Europe; Mongolia Asia; Morocco Africa; Norway Europe""",
    "The currency of {} is the": """Japan yen; the United States dollar; India rupee; Russia ruble; China yuan;
        the United Kingdom pound; Mexico peso; South Korea won; Switzerland franc; Turkey lira""",
    "The day after {} is": """Monday Tuesday; Tuesday Wednesday; Wednesday Thursday; Thursday Friday; Friday Saturday;
        Saturday Sunday; Sunday Monday""",
    "The month after {} is": """January February; February March; March April; April May; May June; June July;
        July August; August September; September October; October November; November December; December January""",
    "The opposite of {} is": """hot cold; up down; day night; fast slow; wet dry; early late; full empty; left right;
        rich poor; happy sad; loud quiet; inside outside; above below; before after; first last; strong weak;
        thick thin; easy hard; clean dirty; north south; east west; summer winter; big small; old young;
        light dark; tall short; open closed; good bad; black white; love hate""",
    "The plural of {} is": """mouse mice; child children; man men; woman women; tooth teeth; foot feet; goose geese;
        person people; knife knives; leaf leaves; box boxes; city cities; baby babies; wolf wolves; ox oxen""",
    "A baby {} is called a": """dog puppy; cat kitten; cow calf; sheep lamb; horse foal; goat kid; frog tadpole;
        kangaroo joey; duck duckling; bear cub; swan cygnet; pig piglet; goose gosling""",
    "The colour of {} is": """grass green; snow white; the sky blue; coal black; a banana yellow; blood red;
        an orange orange; a lemon yellow; milk white; a tomato red""",
    "{} is the": """Mercury smallest; Jupiter largest""",
    "The planet closest to the Sun is": """- Mercury""",
    "The largest planet in the solar system is": """- Jupiter""",
    "The Red Planet is": """- Mars""",
    "The chemical symbol for {} is": """gold Au; silver Ag; iron Fe; oxygen O; hydrogen H; carbon C; sodium Na;
        helium He""",
}


def world_fact_candidates() -> list[tuple[str, str, str]]:
    """(prompt, answer, kind) candidates of real-world knowledge, in a fixed order (>= 150).

    Not every one is something a 135M model knows: `known_facts` keeps those a given model
    completes correctly *before* fine-tuning, so that a later miss is a fact it forgot (lab 06,
    section 12). Written for this lab from common knowledge; none of them appears in the lab's
    general corpus, which is about fictional places (so replay of that corpus cannot rehearse them).
    """
    out = []
    for template, rows in _WORLD.items():
        kind = template.split("{}")[0].strip().lower() or template.split("{}")[-1].strip().lower()
        for row in " ".join(rows.split()).split(";"):
            *subject, answer = row.split()
            subject = " ".join(subject)
            prompt = template if subject == "-" else template.format(subject)
            prompt = prompt[0].upper() + prompt[1:]
            out.append((prompt, answer, kind.replace(" {}", "")))
    return out


def known_facts(model, tokenizer, candidates: list[tuple] | None = None, suffix: str = "",
                add_bos: bool = False) -> list[tuple[str, str]]:
    """The (prompt, answer) candidates ``model`` completes correctly now (greedy, `fact_hits`).

    Measure forgetting on these: each was answered correctly before fine-tuning, so recall starts
    at 100% by construction and every later miss is a fact the model lost.
    """
    candidates = world_fact_candidates() if candidates is None else candidates
    pairs = [tuple(c[:2]) for c in candidates]
    hits = fact_hits(model, tokenizer, pairs, suffix=suffix, add_bos=add_bos)
    return [p for p, h in zip(pairs, hits) if h]
