"""Synthetic data sets for the labs: corpora, facts, instructions, dialogues, word problems.

Why synthetic? The labs run offline on a laptop CPU, so nothing can be downloaded,
and every number a learner sees must be reproducible. Generating the text with
small template grammars gives us three things real data cannot:

* **Offline and tiny.** A few thousand templated documents with a vocabulary of
  about a thousand words are enough for a 4M-parameter model to become fluent
  in under two minutes on one GPU.
* **Reproducible.** Every generator takes a ``seed`` and uses its own
  ``random.Random``; the same call gives the same text on every machine.
* **Measurable knowledge.** The general corpus keeps repeating a fixed list of
  fictional FACTS ("The capital of Veloria is Marden."). Because they are
  fictional, the model can only know them from our corpus, so ``fact_probes()``
  measures exactly what pretraining taught it, and what fine-tuning on the
  DOMAIN corpus (maintenance logs of fictional machines) makes it forget.

Train/test splits are disjoint *by construction*: an item belongs to the split
``split_of(key)`` (a hash of the document text, or of the prompt/question), and
the generators simply skip items of the other split. Only the fact sentences,
which are shared knowledge, appear in both.

Regenerate the committed sample files in ``data/corpora/`` with::

    python -m labkit data
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

SPLITS = ("train", "test")
NAMES = ("general", "domain", "instructions", "dialogues", "word_problems")
CORPORA_DIR = Path(__file__).resolve().parent.parent / "data" / "corpora"


def _rows(text: str) -> list[tuple[str, ...]]:
    """Parse a table written one row per line, columns separated by '|'."""
    return [tuple(c.strip() for c in line.split("|")) for line in text.strip().splitlines()]


def _list(text: str) -> list[str]:
    """Parse a list of (possibly multi-word) phrases separated by ';'."""
    return [w.strip() for w in text.split(";") if w.strip()]


def _a(word: str) -> str:
    """'a fox', 'an owl': good enough for our word lists."""
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# =========================================================================== facts
# One row per fictional country: country | capital | language | river of the capital
_COUNTRIES = _rows("""
Veloria | Marden | Amaric | Avel
Ostrelia | Oburn | Belish | Brisk
Carvania | Kessow | Corvan | Corran
Keldor | Talvik | Dalish | Ember
Marovia | Brennor | Eskol | Fenn
Pellandia | Cadwell | Fendic | Gallow
Quorvia | Dorrin | Gorran | Hesk
Rhestan | Elsford | Helvic | Ilse
Sorvenia | Farrow | Ivrin | Jorra
Talvane | Glenmoor | Jaskic | Kell
Umbrosa | Harlowe | Kelvish | Lorne
Vantoria | Istwick | Lumic | Morrow
Wenloria | Jorvell | Marric | Nessa
Xandria | Kilmarsh | Norvic | Orla
Yarrowen | Lorwen | Ossic | Pell
Zephyra | Mossby | Pellic | Quill
Aldoria | Narwick | Quenish | Rhee
Brevonia | Orlen | Rusk | Sable
Calderra | Pendrel | Savic | Tamsin
Dravonia | Quenby | Tolvic | Ulla
Elmaris | Rothmere | Ulmic | Vell
Fennoria | Selwick | Varric | Wend
Galdovia | Tarnby | Wessic | Yarro
Halvenia | Ulverdale | Yorvic | Zorn
Istrovar | Wexmoor | Zandic | Ashby
""")
_BIRDS = list(zip(
    [b + " bird" for b in "zelk tarrow quillet fennet corrin dunlet ebbin flink gorrel hessel ibbet jessamy kerrow "
     "lindel mottle nibbit orrin pelwit rusket sallow tinnet umbral vesper wistle yellin".split()],
    "blue green red yellow orange purple white black grey brown pink silver golden "
    "blue green red yellow white black orange purple grey brown pink silver".split(),
))
# person | job (starts with a consonant: "works as a ...") | town where they were born
_PEOPLE = _rows("""
Tomas Brill | baker | Marden
Edda Vane | potter | Kessow
Marta Quell | fisher | Oburn
Oskar Lind | weaver | Talvik
Greta Holm | tailor | Brennor
Anton Pike | miller | Cadwell
Liesel Marsh | sailor | Dorrin
Fabian Dorn | painter | Elsford
Nora Blyth | builder | Farrow
Horst Renn | farmer | Glenmoor
Ida Crane | teacher | Harlowe
Milo Thorne | doctor | Istwick
Vera Sutt | carpenter | Jorvell
Otto Fenwick | gardener | Kilmarsh
Rike Kell | shepherd | Lorwen
Emil Strand | butcher | Mossby
Alma Frost | barber | Narwick
Jasper Wyke | singer | Orlen
Cosima Penn | writer | Pendrel
Viktor Hale | pilot | Quenby
Sofia Brand | nurse | Marden
Leon Ashby | jeweller | Rothmere
Mira Cole | locksmith | Kessow
Konrad Dunning | mason | Tarnby
Petra Lowe | brewer | Wexmoor
""")
# Fictional machines of the DOMAIN corpus: machine | lubricant | weakest part | maker | overheat code
_MACHINES = _rows("""
Brenna pump | veltane | impeller | Halvik | E12
Kestrel lathe | oxolin | spindle | Dorrance | F31
Orvan compressor | silvex | piston | Kemble | C07
Tullis press | ambrol | cylinder | Ostrand | P44
Mardock boiler | tessite | burner | Pruett | B19
Sefton turbine | veltane | blade | Vanstone | T52
Halden mixer | corvane | paddle | Halvik | M23
Corvin drill | oxolin | chuck | Kemble | D08
Averly loom | drayline | shuttle | Dorrance | L61
Pellam crane | ambrol | cable | Ostrand | K35
Dunmore furnace | tessite | thermocouple | Pruett | H90
Ixton generator | silvex | regulator | Vanstone | G14
Rookwell conveyor | corvane | roller | Halvik | R27
Vashti grinder | drayline | wheel | Kemble | W72
Quellan winch | veltane | ratchet | Dorrance | N46
Garrick saw | oxolin | guard | Ostrand | S83
Fenmore kiln | tessite | element | Pruett | A58
Lorne fan | corvane | bearing | Vanstone | V16
Ashgrove extruder | ambrol | screw | Halvik | X29
Brisco hoist | silvex | chain | Kemble | Y63
""")

# relation -> (canonical cloze prompt, two paraphrases). {e} = entity, {a} = attribute.
# The canonical sentence is always prompt + " " + attribute + "."; probes use the prompt.
_RELATIONS = {
    "capital": ("The capital of {e} is", ["{a} is the capital of {e}.", "The capital city of {e} is {a}."]),
    "language": ("People in {e} speak", ["The language of {e} is {a}.", "In {e}, most people speak {a}."]),
    "river": ("The river of {e} is the", ["The {a} river flows through {e}.", "{e} stands on the banks of the {a}."]),
    "colour": ("The colour of the {e} is", ["The {e} has {a} feathers.", "You can always tell the {e} by its {a} feathers."]),
    "job": ("{e} works as a", ["{e} is a {a} by trade.", "By profession, {e} is a {a}."]),
    "born": ("{e} was born in", ["The home town of {e} is {a}.", "{a} is the town where {e} was born."]),
    "lubricant": ("The {e} is lubricated with", ["Always lubricate the {e} with {a}.", "Only {a} should be used to lubricate the {e}."]),
    "weak_part": ("The weakest part of the {e} is the", ["On the {e}, the {a} usually fails first.", "When the {e} breaks down, check the {a} first."]),
    "maker": ("The {e} is made by", ["The {e} is built by the {a} company.", "{a} builds the {e} at its main factory."]),
    "overheat_code": ("The overheat code of the {e} is", ["The {e} shows code {a} when it overheats.", "Code {a} on the {e} means that it is too hot."]),
}

FACTS: list[tuple[str, str, str]] = (
    [(c, "capital", cap) for c, cap, _, _ in _COUNTRIES]
    + [(c, "language", lang) for c, _, lang, _ in _COUNTRIES]
    + [(cap, "river", river) for _, cap, _, river in _COUNTRIES]
    + [(bird, "colour", colour) for bird, colour in _BIRDS]
    + [(p, "job", job) for p, job, _ in _PEOPLE]
    + [(p, "born", town) for p, _, town in _PEOPLE]
)
DOMAIN_FACTS: list[tuple[str, str, str]] = [
    (m, rel, attr)
    for m, *attrs in _MACHINES
    for rel, attr in zip(("lubricant", "weak_part", "maker", "overheat_code"), attrs)
]


def fact_sentence(entity: str, relation: str, attribute: str, phrasing: int = 0) -> str:
    """Phrasing 0 is the canonical sentence (probe prompt + answer); 1 and 2 are paraphrases."""
    prompt, others = _RELATIONS[relation]
    if phrasing == 0:
        return prompt.format(e=entity) + " " + attribute + "."
    return _cap(others[phrasing - 1].format(e=entity, a=attribute))


def fact_probes() -> list[tuple[str, str]]:
    """(prompt, answer) per fact, e.g. ("The capital of Veloria is", "Marden")."""
    return [(_RELATIONS[r][0].format(e=e), a) for e, r, a in FACTS]


def domain_probes() -> list[tuple[str, str]]:
    """(prompt, answer) per domain fact, e.g. ("The Brenna pump is made by", "Halvik")."""
    return [(_RELATIONS[r][0].format(e=e), a) for e, r, a in DOMAIN_FACTS]


class _Deck:
    """Deal cards in shuffled rounds, so every fact is stated about equally often
    (a plain random choice would leave some facts almost unseen in a small corpus)."""

    def __init__(self, rng: random.Random, cards: list):
        self.rng, self.cards, self.pile = rng, cards, []

    def draw(self):
        if not self.pile:
            self.pile = list(self.cards)
            self.rng.shuffle(self.pile)
        return self.pile.pop()


def _fact_cards(facts) -> list:
    """The canonical phrasing is dealt twice as often as each paraphrase."""
    return [(fact, ph) for fact in facts for ph in (0, 0, 1, 2)]


# =========================================================================== word tables
_FEMALE = ("Anna Mia Sara Lucy Emma Clara Nina Rosa Lily Ella Maya Julia Helen Grace Alice Ruth Jane Kate Molly "
           "Hannah Eva Iris Lena Tara Zoe Amy Beth Dora Fay Judy Olga Paula Wendy Agnes Bella Cora Elsie Freya").split()
_MALE = ("Ben Tom Leo Sam Max Jack Oscar Felix Hugo Paul Peter Omar Ivan Adam Noah Luke Owen Theo Carl Dan Eric "
         "Finn George Henry Jonas Karl Mark Nils Rob Victor Alan Bruno Colin David Frank Gus Ian Lars").split()
_TOWNS = [cap for _, cap, _, _ in _COUNTRIES]
_RIVER_OF = {cap: river for _, cap, _, river in _COUNTRIES}
_JOBS = _rows("""
baker | bakes bread and cakes for the whole town
farmer | feeds the animals and works in the fields
teacher | teaches the children to read and write
doctor | helps people who are sick
nurse | looks after the patients at the hospital
fisher | takes a small boat out on the river
builder | builds houses and garden walls
painter | paints houses, doors and fences
driver | drives the big green bus through the town
cook | makes soup and stew in a busy kitchen
tailor | sews coats, shirts and dresses
miller | grinds wheat into flour at the old mill
gardener | plants flowers and cuts the grass in the park
carpenter | makes tables and chairs from oak
potter | makes cups and bowls from clay
librarian | helps people find good books
singer | sings songs in the town hall
writer | writes stories for children
pilot | flies small planes over the hills
sailor | sails ships across the sea
shepherd | watches the sheep on the hills
weaver | weaves cloth on a wooden loom
blacksmith | makes tools and horseshoes from iron
clerk | writes letters and keeps the records
guard | watches the gate of the old castle
dentist | looks after people's teeth
engineer | repairs bridges and roads
artist | paints pictures of the sea
actor | plays in the theatre every weekend
barber | cuts hair in a small shop
butcher | sells meat at the market
grocer | sells fruit and vegetables
mechanic | repairs cars and bicycles
musician | plays the violin at weddings
plumber | fixes pipes and taps
postman | delivers letters and parcels
waiter | serves food in a busy cafe
scientist | studies plants and insects
vet | takes care of sick animals
beekeeper | looks after the bees and collects honey
""")
_PLACES = _list("""market; library; bakery; harbour; park; school; station; museum; bridge; forest; farm; garden;
beach; lake; square; mill; orchard; castle; tower; hospital; theatre; cafe; post office; town hall; church; meadow;
bookshop; zoo; swimming pool; playground; cinema; gallery; workshop; barn; inn; hill; pond; vineyard; stable; dairy""")
# singular | plural | size | habitat | diet | feature
_ANIMALS = _rows("""
fox | foxes | small | the forest | mice, berries and eggs | a long bushy tail
owl | owls | small | old hollow trees | mice and insects | large round eyes
deer | deer | large | the woods | grass, leaves and acorns | long thin legs
rabbit | rabbits | small | fields and meadows | grass and clover | long soft ears
horse | horses | large | farms and open fields | hay, grass and oats | a long mane
cow | cows | large | green farms | grass and hay | a gentle face
sheep | sheep | mid-sized | the hills | grass and clover | thick white wool
goat | goats | mid-sized | rocky hills | grass, leaves and bark | short curved horns
duck | ducks | small | lakes and ponds | seeds, worms and weeds | webbed feet
frog | frogs | small | ponds and wet grass | flies and worms | strong back legs
bear | bears | large | the mountains | fish, berries and honey | thick brown fur
wolf | wolves | mid-sized | the northern forests | deer and rabbits | a loud howl
squirrel | squirrels | small | tall trees | nuts and seeds | a fluffy tail
hedgehog | hedgehogs | small | gardens and hedges | beetles and worms | sharp spines
badger | badgers | mid-sized | deep holes in the woods | worms, roots and fruit | a black and white face
otter | otters | mid-sized | rivers and streams | fish and crabs | a smooth wet coat
beaver | beavers | mid-sized | quiet rivers | bark and twigs | strong front teeth
mouse | mice | tiny | fields and old houses | seeds and grain | a thin pink tail
swan | swans | large | lakes and rivers | water plants | a long white neck
eagle | eagles | large | high cliffs | fish and small animals | sharp eyes
crow | crows | small | towns and fields | almost anything | shiny black feathers
turtle | turtles | small | ponds and warm rivers | plants and insects | a hard shell
seal | seals | large | cold seas | fish | a round head and whiskers
whale | whales | huge | the deep sea | tiny sea animals | a huge tail
dolphin | dolphins | large | warm seas | fish and squid | a curved fin
camel | camels | large | dry deserts | dry plants | a big hump
elephant | elephants | huge | warm grasslands | grass, leaves and fruit | a long trunk
lion | lions | large | warm grasslands | zebras and antelope | a golden mane
monkey | monkeys | small | tall jungle trees | fruit and leaves | long arms
bee | bees | tiny | hives and gardens | nectar from flowers | a striped body
""")
_PRODUCE = ("apples pears plums cherries grapes oranges lemons carrots potatoes onions beans peas tomatoes mushrooms "
            "eggs nuts berries peaches melons cucumbers radishes leeks figs turnips olives sausages biscuits").split()
_GROCERIES = "bread cheese butter honey rice milk flour sugar jam tea coffee oats fish soup cream yogurt chocolate pasta".split()
_SPICES = _list("salt; pepper; garlic; sugar; honey; butter; fresh herbs; cream; cheese; lemon juice; cinnamon")
_DISHES = "soup stew pie cake salad omelette curry pudding tart risotto casserole crumble pizza sandwich".split()
_OBJECTS = ("book lamp basket letter map key hat coat umbrella bag cup bottle kite ball box bell clock pen notebook "
            "camera bicycle boat ladder rope candle blanket chair table ring scarf bucket brush hammer jar plate spoon "
            "shelf drum flute guitar radio ticket painting mirror pillow teapot wallet watch compass lantern").split()
_RELATIVES = "brother sister mother father grandmother grandfather aunt uncle cousin son daughter neighbour".split()
_TOPICS = _list("""old ships; the stars; birds; the sea; ancient kings; mountains; trees; music; cooking; horses;
far away countries; the moon; insects; old castles; famous painters; rivers; clocks; trains; gardens; the weather;
bees; farming; stones and rocks; islands; lighthouses; maps""")
_TIMES = _list("""in the morning; in the afternoon; in the evening; yesterday; last week; after lunch; before dinner;
at noon; later that day; early in the morning; on a quiet afternoon""")
_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_SEASONS = _list("last spring; last summer; last autumn; last winter; two years ago; a month ago; last year")
_TRANSPORT = "train bus boat bicycle car ferry coach".split()
_SCENERY = _list("""green hills; small farms; a wide river; old windmills; dark forests; fields of wheat;
tall mountains; quiet villages; a long lake; herds of cows; orchards full of fruit; a stone bridge""")
# weather | what a sensible person did about it
_WEATHER = _rows("""
cold and windy | wore a warm coat and a scarf
rainy | took an umbrella
sunny and warm | sat outside in the garden
snowy | built a snowman with the children
foggy | walked slowly and carefully
hot and dry | drank a lot of cold water
stormy | stayed at home all day
frosty | wore thick gloves
cloudy | took a jacket just in case
bright and clear | went for a long walk
wet and grey | read a book by the fire
breezy | flew a kite in the park
mild and calm | worked in the garden
""")
# feeling | why (a template using the person's pronouns)
_FEELINGS = _rows("""
happy | {his} {relative} came to visit
tired | {he} had worked all day
sad | {his} old {object} was broken
excited | {he} was going on a trip to {town2}
hungry | {he} had not eaten since breakfast
worried | the bus was very late
proud | {he} had finished a difficult job
nervous | {he} had to speak in front of many people
surprised | {his} friends had made a cake for {him}
bored | it rained all afternoon
glad | the sun came out at last
calm | the house was quiet
cheerful | {he} had heard some good news
sleepy | {he} had stayed up late reading
grateful | a neighbour helped {him} carry {his} bags
lonely | {his} friends were away
curious | {he} found an old map in the attic
pleased | {his} garden was full of flowers
annoyed | {he} had lost {his} keys
""")
_ACTIVITIES = _list("""read a book about {topic}; wrote a letter to {his} {relative}; painted a picture of the {place};
repaired an old {object}; played chess with {his} {relative}; went for a long walk by the river; fed the ducks at the lake;
cleaned the whole house; visited {his} {relative} in {town2}; planted {produce} in the garden;
listened to music on the radio; baked a {dish} for the neighbours; swam in the lake; rode {his} bicycle to the {place};
helped a neighbour carry some boxes; learned a new song on the {instrument}; sorted old photographs;
watched the boats in the harbour; drew a map of {town}; knitted a scarf for {his} {relative}; washed the windows;
made a kite with the children; sat in the {place} and watched the birds; wrote in {his} diary; mended a hole in {his} coat""")
_TOGETHER = _list("""play chess in the {place}; walk along the river; cook dinner together; go swimming in the lake;
sing in the town choir; work in the garden; visit the market; read books in the library""")
_ADJ = "quick quiet clever gentle shy strong curious playful patient noisy careful brave calm busy friendly lazy".split()
_TOWN_ADJ = "quiet busy pretty old small friendly peaceful lively clean famous".split()
_NUMBERS = "two three four five six seven eight nine ten eleven twelve".split()
_INSTRUMENTS = "violin piano flute guitar drum harp trumpet".split()
_BUILDINGS = _list("stone bridge; clock tower; town hall; church; windmill; castle; library; lighthouse")


# =========================================================================== general corpus
# Each theme: intro sentence, middle sentences (kept in table order), outro sentence.
_THEMES = {
    "day": {
        "intro": ["{name} is {a_job} in {town}.", "{name} works as {a_job} in the town of {town}.", "{name} lives in {town} and works as {a_job}."],
        "middle": [
            "Every morning {he} {duty}.", "On {day} morning {he} {activity}.", "On {day} it was {weather}, so {he} {consequence}.",
            "{he} walked to the {place} and bought some {food} and {food2}.", "{time}, {he} {activity2}.",
            "{he} met {friend} at the {place2}, and they talked about {topic}.", "{he} felt {feeling} because {reason}.",
            "On the way home {he} saw {a_animal} near the {place}.", "{his} {relative} came to dinner, and they ate {a_dish} together.",
        ],
        "outro": ["In the evening {he} went to bed early.", "It was a good day for {name}.", "At night {he} slept well because {he} was tired.", "{name} hopes that tomorrow will be {weather2}."],
    },
    "animal": {
        "intro": ["The {animal} is a {size} animal that lives in {habitat}.", "{a_animal} is a {size} animal with {feature}."],
        "middle": [
            "{animals} eat {diet}.", "Most {animals} have {feature}.", "{animals} are {adj} and {adj2}.", "Many {animals} live near {town}.",
            "A young {animal} stays close to its mother for many weeks.", "When the weather is {weather}, the {animals} stay in {habitat}.",
            "In winter it is hard for the {animals} to find food.", "Children in {town} like to watch the {animals}.",
            "{name}, {a_job} from {town}, once saw {a_animal} near the {place}.", "{he} was surprised because {animals} are often shy.",
        ],
        "outro": ["The {animal} is one of the most {adj} animals in the land.", "{name} hopes to see {a_animal} again soon.", "Everyone should be kind to animals."],
    },
    "town": {
        "intro": ["{town} is a {town_adj} town on the {river} river.", "The town of {town} is {town_adj} and old."],
        "middle": [
            "The old {building} in the centre was built long ago.", "Visitors come from {town2} to see the {building}.",
            "The {place} is the busiest place in town.", "Children play near the {place2} after school.",
            "On {day} there is a market where farmers sell {produce} and {food}.", "In summer, boats carry {produce} down the river.",
            "{name}, who works as {a_job}, has lived in {town} for {num} years.", "Many people walk along the river in the evening.",
            "Today the weather in {town} is {weather}.", "Tomorrow the weather will be {weather2}.",
        ],
        "outro": ["{town} is a {town_adj} place to live.", "Visitors often say that {town} is {town_adj}.", "Everyone in {town} knows the way to the {place}."],
    },
    "cooking": {
        "intro": ["{name} likes to cook.", "{name} wanted to make {a_dish} for {his} {relative}."],
        "middle": [
            "{he} bought {produce} at the market in {town}.", "First {he} washed the {produce} and cut them into small pieces.",
            "Then {he} added some {food} and a little {spice}.", "{he} cooked everything for {num} minutes.",
            "The kitchen smelled of {spice} and warm bread.", "While the {dish} was in the oven, {he} cleaned the kitchen.",
            "{his} {relative} said that the {dish} was very good.", "They ate it at the table with some bread and tea.",
            "There was a little {dish} left, so {he} gave it to {friend}.",
        ],
        "outro": ["It was the best {dish} that {name} had ever made.", "Next week {name} wants to cook {a_dish2}.", "After dinner {he} washed the dishes."],
    },
    "travel": {
        "intro": ["{season}, {name} travelled from {town} to {town2} by {transport}.", "{name} once took a long trip to {town2}."],
        "middle": [
            "The journey took {num} hours.", "From the window {he} saw {scenery} and {scenery2}.",
            "{he} sat next to {a_job} who told {him} about {topic}.", "When {he} arrived, it was {weather}.",
            "{he} stayed at a small inn near the {place}.", "{he} was {feeling} because {reason}.",
            "The next day {he} visited the {place2} and bought {a_object} for {his} {relative}.",
            "{he} ate {a_dish} at a little cafe by the river.", "In the evening {he} wrote a postcard to {friend}.",
        ],
        "outro": ["After {num2} days {he} went back home to {town}.", "{name} wants to visit {town2} again next year.", "It was a journey {he} will always remember."],
    },
    "friends": {
        "intro": ["{name} and {friend} have been friends for {num} years.", "{name} has a good friend called {friend}."],
        "middle": [
            "They first met at school in {town}.", "{friend} works as {a_job2} and lives near the {place}.",
            "Every {day} they {together}.", "When it is {weather}, they {together2}.", "They like to talk about {topic} for hours.",
            "Last week {friend} was {feeling2} because {reason2}.", "{name} brought {friend} some {food} and {a_object}.",
            "One day {friend} helped {name} fix {his} {object}.",
        ],
        "outro": ["Good friends always help each other.", "{name} and {friend} will meet again on {day}.", "{name} is glad to have a friend like {friend}."],
    },
}
_THEME_NAMES = list(_THEMES)

# Short sentences that lead into a fact, so fact sentences sit naturally in a story.
_BRIDGES = {
    "country": ["{name} once read a book about {e}.", "{name} has a cousin who lives in {e}.", "At school {he} learned about {e}."],
    "town": ["{name} has visited {e} many times.", "Last year {name} spent a week in {e}."],
    "bird": ["{name} saw {a_e} in the {place}.", "{name} likes to watch birds, especially the {e}."],
    "person": ["{name} met {e} at the {place}.", "{e} is an old friend of {name}."],
}
_BRIDGE_OF = {"capital": "country", "language": "country", "river": "town", "colour": "bird", "job": "person", "born": "person"}


def _person(rng: random.Random, suffix: str = "") -> dict:
    """A first name with matching pronouns: {name}, {he}, {his}, {him} (+ suffix)."""
    female = rng.random() < 0.5
    name = rng.choice(_FEMALE if female else _MALE)
    he, his, him = ("she", "her", "her") if female else ("he", "his", "him")
    return {"name" + suffix: name, "he" + suffix: he, "his" + suffix: his, "him" + suffix: him}


def _story_context(rng: random.Random) -> dict:
    """Draw every slot of one general document once, so that its sentences agree
    (the same person, town and weather throughout)."""
    ctx = _person(rng)
    friend = _person(rng, "2")
    while friend["name2"] == ctx["name"]:
        friend = _person(rng, "2")
    ctx.update(friend, friend=friend["name2"])
    (job, duty), (job2, _) = rng.sample(_JOBS, 2)
    town, town2 = rng.sample(_TOWNS, 2)
    animal = rng.choice(_ANIMALS)
    (weather, consequence), (weather2, _) = rng.sample(_WEATHER, 2)
    (feeling, reason), (feeling2, reason2) = rng.sample(_FEELINGS, 2)
    places, foods, dishes = rng.sample(_PLACES, 2), rng.sample(_PRODUCE + _GROCERIES, 2), rng.sample(_DISHES, 2)
    scenery, adjs = rng.sample(_SCENERY, 2), rng.sample(_ADJ, 2)
    ctx.update(
        job=job, a_job=_a(job), duty=duty, a_job2=_a(job2), town=town, town2=town2, river=_RIVER_OF[town],
        place=places[0], place2=places[1], food=foods[0], food2=foods[1], produce=rng.choice(_PRODUCE),
        dish=dishes[0], a_dish=_a(dishes[0]), a_dish2=_a(dishes[1]), spice=rng.choice(_SPICES), object=rng.choice(_OBJECTS),
        a_object=_a(rng.choice(_OBJECTS)), relative=rng.choice(_RELATIVES), topic=rng.choice(_TOPICS),
        time=rng.choice(_TIMES), day=rng.choice(_WEEKDAYS), season=rng.choice(_SEASONS),
        transport=rng.choice(_TRANSPORT), scenery=scenery[0], scenery2=scenery[1],
        weather=weather, consequence=consequence, weather2=weather2, feeling=feeling, feeling2=feeling2,
        num=rng.choice(_NUMBERS), num2=rng.choice(_NUMBERS), instrument=rng.choice(_INSTRUMENTS),
        animal=animal[0], animals=animal[1], a_animal=_a(animal[0]), size=animal[2], habitat=animal[3],
        diet=animal[4], feature=animal[5], adj=adjs[0], adj2=adjs[1],
        town_adj=rng.choice(_TOWN_ADJ), building=rng.choice(_BUILDINGS),
    )
    # second pass: slots whose values are themselves templates
    friend_view = {**ctx, "he": ctx["he2"], "his": ctx["his2"], "him": ctx["him2"]}
    acts, tog = rng.sample(_ACTIVITIES, 2), rng.sample(_TOGETHER, 2)
    ctx.update(
        reason=reason.format_map(ctx), reason2=reason2.format_map(friend_view),
        activity=acts[0].format_map(ctx), activity2=acts[1].format_map(ctx),
        together=tog[0].format_map(ctx), together2=tog[1].format_map(ctx),
    )
    return ctx


def _middles(rng: random.Random, templates: list[str], ctx: dict, k: int = 6) -> list[tuple[int, str]]:
    """k random middle templates, filled in, remembering their place in the table."""
    idx = rng.sample(range(len(templates)), min(k, len(templates)))
    return [(i, templates[i].format_map(ctx)) for i in idx]


def _finish(sents: list[str]) -> str | None:
    """Join sentences into a document, or None if it breaks the 3-8 sentence / 40-120 word rule."""
    n_words = len(" ".join(sents).split())
    if not (3 <= len(sents) <= 8 and 40 <= n_words <= 120):
        return None
    return " ".join(_cap(s) for s in sents)


def _assemble(rng: random.Random, intro: str, middles: list[tuple[int, str]], facts: list[str], outro: str) -> str | None:
    """Keep k of the middles (in table order, so the story flows) with k chosen to fit the
    length rule; the fact sentences go in at a random position."""
    pos = rng.randint(0, len(middles))
    kmax = min(len(middles), 6 - len(facts))
    k = rng.randint(max(1, kmax - 4), max(1, kmax))

    def build(k):
        body = [s for _, s in sorted(middles[:k])]
        return [intro] + body[:pos] + facts + body[pos:] + [outro]

    sents = build(k)
    while k < kmax and len(" ".join(sents).split()) < 40:
        k += 1
        sents = build(k)
    while k > 0 and len(" ".join(sents).split()) > 120:
        k -= 1
        sents = build(k)
    return _finish(sents)


def _fact_block(rng: random.Random, ctx: dict, card) -> list[str]:
    """One fact sentence, often introduced by a bridge sentence."""
    (e, rel, a), phrasing = card
    out = []
    if rng.random() < 0.6:
        bridge = rng.choice(_BRIDGES[_BRIDGE_OF[rel]])
        out.append(bridge.format_map({**ctx, "e": e, "a_e": _a(e)}))
    return out + [fact_sentence(e, rel, a, phrasing)]


def _general_doc(rng: random.Random, deck: _Deck) -> str | None:
    theme = _THEMES[rng.choice(_THEME_NAMES)]
    ctx = _story_context(rng)
    intro = rng.choice(theme["intro"]).format_map(ctx)
    outro = rng.choice(theme["outro"]).format_map(ctx)
    middles = _middles(rng, theme["middle"], ctx)
    facts = []
    if rng.random() < 0.3:  # about 30% of documents state one or two facts
        for _ in range(1 if rng.random() < 0.65 else 2):
            facts += _fact_block(rng, ctx, deck.draw())
    return _assemble(rng, intro, middles, facts, outro)


# =========================================================================== domain corpus
_PURPOSE = {
    "pump": "moving coolant around the plant", "lathe": "cutting and shaping metal rods",
    "compressor": "supplying compressed air to the tools", "press": "stamping steel sheets into panels",
    "boiler": "making steam for the heating system", "turbine": "turning steam into electric power",
    "mixer": "mixing paint and resin", "drill": "drilling holes in steel plates", "loom": "weaving heavy cloth",
    "crane": "lifting heavy loads in the yard", "furnace": "melting scrap metal", "generator": "supplying backup power",
    "conveyor": "moving boxes between stations", "grinder": "grinding and polishing metal parts",
    "winch": "pulling heavy cables", "saw": "cutting timber into boards", "kiln": "firing clay tiles",
    "fan": "cooling the machine hall", "extruder": "pushing plastic through a shaped die", "hoist": "raising parts to the upper floor",
}
_PARTS = ("valve gasket seal bearing belt filter spring shaft nozzle coupling piston gear bushing fuse relay sensor "
          "hose clamp flange pulley rotor motor switch thermostat").split()
_CONDITIONS = "worn cracked loose corroded clogged leaking bent scored dirty misaligned".split()
_CAUSES = _list("""a blocked filter; a loose belt; a low oil level; a damaged seal; a faulty sensor; a worn bearing;
a bent shaft; dirt in the fuel line; a broken spring; a failed relay""")
_TOOLS = _list("torque wrench; multimeter; feeler gauge; hex key; grease gun; pressure gauge; dial indicator; spanner")
_DOMAIN_THEMES = {
    "log": {
        "intro": ["Maintenance log for the {machine} in bay {bay}.", "Service record {serial}: {machine}, line {line}."],
        "middle": [
            "The technician, {name}, started the inspection at {hour} o'clock.", "The pressure gauge read {psi} psi and the motor ran at {rpm} rpm.",
            "The {part} was {condition}, so {he} replaced it.", "{he} cleaned the {part2} and checked the {part3} for leaks.",
            "{he} measured the gap with a {tool} and adjusted the {part3}.", "All bolts on the {part2} were tightened to {torque} newton metres.",
            "The oil temperature stayed below {temp} degrees during the test.", "The {machine} has now run for {hours} hours since the last overhaul.",
        ],
        "outro": ["The unit passed the final test and returned to service.", "The next service is due in {days} days.", "No further faults were found."],
    },
    "procedure": {  # steps are never shuffled or cut in the middle
        "intro": ["To replace the {part} on the {machine}, follow these steps.", "This section explains how to service the {part} of the {machine}."],
        "middle": [
            "switch off the main power and lock the isolator.", "drain the {fluid} into a clean tray.",
            "remove the {num} bolts that hold the front cover.", "lift out the old {part} and inspect the {part2} for wear.",
            "fit the new {part} and tighten the bolts to {torque} newton metres.", "refill the {machine} with fresh {fluid} up to the mark.",
            "run the {machine} at low speed for {minutes} minutes and listen for noise.",
        ],
        "outro": ["Record the work in the service log.", "Always wear gloves and eye protection.", "Report any unusual noise to the supervisor."],
    },
    "fault": {
        "intro": ["Fault report for the {machine} on line {line}.", "During the {shift} shift the {machine} stopped without warning."],
        "middle": [
            "The operator, {name}, reported a loud noise from the {part}.", "The pressure dropped to {psi} psi before the stop.",
            "A check showed that the {part} was {condition}.", "{he} tested the {part3} with a {tool} and found no damage.",
            "The cause was {cause}.", "The {part} was replaced and the {part2} was adjusted.",
            "After the repair the {machine} ran smoothly at {rpm} rpm.", "The line was down for {minutes} minutes.",
        ],
        "outro": ["The fault is now closed.", "The {machine} is back in service.", "A follow-up check is planned in {days} days."],
    },
    "spec": {
        "intro": ["The {machine} is a machine used for {purpose}.", "The {machine} is used in the plant for {purpose}."],
        "middle": [
            "It should be checked every {days} days.", "Its main parts are the {part}, the {part2} and the {part3}.",
            "Operators must keep the {part} clean and dry.", "A normal reading is about {psi} psi at {rpm} rpm.",
            "Every {hours} hours the {part2} must be inspected for wear.", "Use a {tool} to check the {part3} during each service.",
            "If the {part} is {condition}, stop the machine at once.",
        ],
        "outro": ["Only trained staff may open the covers.", "Keep the service log next to the {machine}.", "Spare parts are kept in the store room."],
    },
}
_DOMAIN_THEME_NAMES = list(_DOMAIN_THEMES)
_ORDER_WORDS = ["First", "Next", "Then", "After that", "Now", "Then"]


def _domain_context(rng: random.Random, machine: tuple) -> dict:
    ctx = _person(rng)
    part, part2, part3 = rng.sample(_PARTS, 3)
    ctx.update(
        machine=machine[0], fluid=machine[1], purpose=_PURPOSE[machine[0].split()[-1]], part=part, part2=part2, part3=part3,
        bay=rng.randint(1, 24), serial=rng.randint(100, 999), line=rng.choice("ABCDEF"), hour=rng.randint(6, 11),
        psi=rng.randrange(20, 122, 2), rpm=rng.randrange(600, 3650, 50), temp=rng.randint(40, 95),
        torque=rng.randrange(20, 125, 5), hours=rng.randrange(200, 9050, 50), days=rng.randint(7, 90),
        minutes=rng.randint(5, 30), num=rng.choice(_NUMBERS[2:]), condition=rng.choice(_CONDITIONS),
        cause=rng.choice(_CAUSES), tool=rng.choice(_TOOLS), shift=rng.choice(("night", "morning", "day")),
    )
    return ctx


def _domain_doc(rng: random.Random, deck: _Deck) -> str | None:
    """A log, procedure, fault report or spec sheet; about 40% also state facts about its machine."""
    cards = []
    if rng.random() < 0.4:
        cards.append(deck.draw())
        name = cards[0][0][0]
        if rng.random() < 0.35:  # a second fact about the same machine
            other = rng.choice([f for f in DOMAIN_FACTS if f[0] == name and f != cards[0][0]])
            cards.append((other, rng.choice((0, 0, 1, 2))))
        machine = next(m for m in _MACHINES if m[0] == name)
    else:
        machine = rng.choice(_MACHINES)
    theme_name = rng.choice(_DOMAIN_THEME_NAMES)
    theme = _DOMAIN_THEMES[theme_name]
    ctx = _domain_context(rng, machine)
    intro = rng.choice(theme["intro"]).format_map(ctx)
    outro = rng.choice(theme["outro"]).format_map(ctx)
    facts = [fact_sentence(*fact, ph) for fact, ph in cards]
    if theme_name == "procedure":
        idx = sorted(rng.sample(range(len(theme["middle"])), rng.randint(3, 6 - len(facts))))
        steps = [f"{_ORDER_WORDS[i]}, {theme['middle'][j].format_map(ctx)}" for i, j in enumerate(idx)]
        steps[-1] = "Finally, " + steps[-1].split(", ", 1)[1]
        return _finish([intro] + facts + steps + [outro])
    return _assemble(rng, intro, _middles(rng, theme["middle"], ctx), facts, outro)


# =========================================================================== the draw loop
def split_of(text: str) -> str:
    """The split an item belongs to: a hash of its key text, the same on every machine."""
    return "test" if int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10 == 0 else "train"


def _check(n: int, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _draw(name: str, make, n: int, seed: int, split: str, split_fn, ident, first=()) -> list:
    """Call make(rng) until n items of `split` are collected, skipping the other split,
    duplicates (same ident) and failed attempts (None)."""
    _check(n, split)
    rng = random.Random(f"{name}:{seed}")  # str seeds are hashed with sha512: stable everywhere
    out = list(first)[:n]
    seen = {ident(x) for x in out}
    budget = 1000 + 200 * n
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(f"could only make {len(out)} unique {name} items for split={split!r}; ask for fewer")
        item = make(rng)
        if item is None or split_fn(item) != split or ident(item) in seen:
            continue
        seen.add(ident(item))
        out.append(item)
    return out


def general_corpus(n_docs: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """n_docs short English stories (3-8 sentences, 40-120 words); ~30% state one or two FACTS."""
    deck = _Deck(random.Random(f"general-facts:{seed}"), _fact_cards(FACTS))
    return _draw("general", lambda rng: _general_doc(rng, deck), n_docs, seed, split, split_of, lambda d: d)


def domain_corpus(n_docs: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """n_docs maintenance logs, procedures, fault reports and spec sheets; ~40% state DOMAIN_FACTS."""
    deck = _Deck(random.Random(f"domain-facts:{seed}"), _fact_cards(DOMAIN_FACTS))
    return _draw("domain", lambda rng: _domain_doc(rng, deck), n_docs, seed, split, split_of, lambda d: d)


# =========================================================================== instructions
_FACT_QUESTIONS = {
    "capital": ["What is the capital of {e}?", "Which city is the capital of {e}?"],
    "language": ["What language do people speak in {e}?", "Which language is spoken in {e}?"],
    "river": ["Which river flows through {e}?", "What is the river of {e}?"],
    "colour": ["What colour is the {e}?", "What is the colour of the {e}?"],
    "job": ["What does {e} do for a living?", "What is the job of {e}?"],
    "born": ["Where was {e} born?", "In which town was {e} born?"],
}
_OPPOSITES = [tuple(p.split("/")) for p in (
    "hot/cold up/down day/night fast/slow open/closed wet/dry early/late full/empty left/right in/out win/lose "
    "push/pull buy/sell rich/poor happy/sad loud/quiet inside/outside above/below before/after first/last "
    "strong/weak thick/thin easy/hard clean/dirty awake/asleep north/south east/west summer/winter arrive/leave give/take"
).split()]
_OPPOSITE_OF = {**{a: b for a, b in _OPPOSITES}, **{b: a for a, b in _OPPOSITES}}
_SIMPLE_WORDS = list(dict.fromkeys(  # dict.fromkeys: de-duplicate but keep a fixed order
    [w for w in _OBJECTS + _PRODUCE + _GROCERIES + [a[0] for a in _ANIMALS] + _ADJ + _TOWN_ADJ]
    + "red blue green runs jumps sleeps sings walks swims eats reads the a big little".split()
))


def _some_words(rng: random.Random, lo: int = 3, hi: int = 7) -> list[str]:
    return rng.sample(_SIMPLE_WORDS, rng.randint(lo, hi))


def _count_answer(k: int) -> str:
    return "There is 1 word." if k == 1 else f"There are {k} words."


def _task_fact(rng):
    e, rel, a = rng.choice(FACTS)
    return rng.choice(_FACT_QUESTIONS[rel]).format(e=e), fact_sentence(e, rel, a)


def _task_add(rng):
    x, y = rng.randint(0, 50), rng.randint(0, 50)
    q = rng.choice(["Add {x} and {y}.", "What is {x} plus {y}?", "What is the sum of {x} and {y}?"])
    return q.format(x=x, y=y), f"{x} plus {y} is {x + y}."


def _task_subtract(rng):
    x = rng.randint(0, 99)
    y = rng.randint(0, x)
    q = rng.choice(["Subtract {y} from {x}.", "What is {x} minus {y}?", "Take {y} away from {x}."])
    return q.format(x=x, y=y), f"{x} minus {y} is {x - y}."


def _task_multiply(rng):
    x, y = rng.randint(2, 12), rng.randint(2, 12)
    q = rng.choice(["What is {x} times {y}?", "Multiply {x} by {y}.", "What is the product of {x} and {y}?"])
    return q.format(x=x, y=y), f"{x} times {y} is {x * y}."


def _task_reverse(rng):
    w = _some_words(rng)
    return "Reverse the words: " + " ".join(w), " ".join(reversed(w))


def _task_opposite(rng):
    w = rng.choice(sorted(_OPPOSITE_OF))
    return rng.choice(["What is the opposite of {w}?", "Give the opposite of {w}."]).format(w=w), _OPPOSITE_OF[w]


def _task_count(rng):
    w = _some_words(rng, 2, 9)
    return "Count the words: " + " ".join(w), _count_answer(len(w))


def _task_repeat(rng):
    w = _some_words(rng)
    return "Repeat after me: " + " ".join(w), " ".join(w)


def _task_sort(rng):
    w = _some_words(rng, 3, 6)
    return "Sort these words alphabetically: " + " ".join(w), " ".join(sorted(w))


_TASKS = {
    "fact": _task_fact, "add": _task_add, "subtract": _task_subtract, "multiply": _task_multiply,
    "reverse": _task_reverse, "opposite": _task_opposite, "count": _task_count, "repeat": _task_repeat,
    "sort": _task_sort,
}


def _instruction(rng: random.Random) -> dict:
    task = rng.choice(list(_TASKS))
    prompt, response = _TASKS[task](rng)
    return {"prompt": prompt, "response": response, "task": task}


def instructions(n: int, *, seed: int = 0, split: str = "train") -> list[dict]:
    """{"prompt", "response", "task"} items whose responses can be checked exactly."""
    key = lambda d: d["prompt"]
    return _draw("instructions", _instruction, n, seed, split, lambda d: split_of(key(d)), key)



_DOMAIN_QUESTIONS = {
    "lubricant": ["What is the {e} lubricated with?", "Which lubricant does the {e} need?"],
    "weak_part": ["What is the weakest part of the {e}?", "Which part of the {e} fails first?"],
    "maker": ["Who makes the {e}?", "Which company builds the {e}?"],
    "overheat_code": ["What is the overheat code of the {e}?", "Which code does the {e} show when it overheats?"],
}


def domain_fact_instructions(seed: int = 0, n_val: int = 16, n_test: int = 32) -> dict[str, list[dict]]:
    """The 80 DOMAIN_FACTS as chat questions, split to test whether fine-tuning *teaches new facts* (lab 04, §3).

    lab-tiny never read these facts (they live only in the domain corpus of lab 06), so its base
    model cannot answer them: a task off the floor and off the ceiling. Every fact is trained in its
    first wording; the second wording of ``n_val`` facts is held back to choose learning rates
    (``"val"``), that of ``n_test`` other facts is the held-out test (``"test"``), and the rest train
    in both wordings (``"fit"``). So a held-out question asks a fact the model was taught, in words
    it never saw with that fact -- recall, not string matching. Items are
    ``{"prompt", "response", "task": "domain_fact"}``; the response is the fact's canonical sentence.
    ``seed`` picks which facts fall in which group.
    """
    n = len(DOMAIN_FACTS)
    if n_val < 0 or n_test < 1 or n_val + n_test > n:
        raise ValueError(f"need 0 <= n_val, 1 <= n_test and n_val + n_test <= {n}; got n_val={n_val}, n_test={n_test}")
    order = list(range(n))
    random.Random(f"domain-fact-instructions:{seed}").shuffle(order)
    val_ids, test_ids, both_ids = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]

    def item(i: int, wording: int) -> dict:
        entity, relation, attribute = DOMAIN_FACTS[i]
        return {"prompt": _DOMAIN_QUESTIONS[relation][wording].format(e=entity),
                "response": fact_sentence(entity, relation, attribute), "task": "domain_fact"}

    return {"fit": [item(i, 0) for i in order] + [item(i, 1) for i in both_ids],
            "val": [item(i, 1) for i in val_ids], "test": [item(i, 1) for i in test_ids]}

# =========================================================================== dialogues
_FOLLOW_UPS = ["What about {e}?", "And {e}?", "How about {e}?", "And what about {e}?"]


def _dlg_same_relation(rng):
    """The same question about several entities: the follow-ups only make sense with the history."""
    rel = rng.choice(list(_FACT_QUESTIONS))
    facts = rng.sample([f for f in FACTS if f[1] == rel], rng.randint(1, 4))
    turns = [(rng.choice(_FACT_QUESTIONS[rel]).format(e=facts[0][0]), fact_sentence(*facts[0]))]
    the = "the " if rel == "colour" else ""
    return turns + [(rng.choice(_FOLLOW_UPS).format(e=the + f[0]), fact_sentence(*f)) for f in facts[1:]]


def _dlg_person(rng):
    """Job, then birthplace, then the river of that town, then its country."""
    person, job, town = rng.choice(_PEOPLE)
    country = next(c for c, cap, _, _ in _COUNTRIES if cap == town)
    job = (("What does {p} do for a living?", "What is the job of {p}?", "What do they do for a living?",
            "And what is their job?"), fact_sentence(person, "job", job))
    born = (("Where was {p} born?", "In which town was {p} born?", "Where were they born?",
             "In which town were they born?"), fact_sentence(person, "born", town))
    first, second = (job, born) if rng.random() < 0.5 else (born, job)  # name first, then "they"
    turns = [(rng.choice(first[0][:2]).format(p=person), first[1]), (rng.choice(second[0][2:]), second[1])]
    turns += [
        (rng.choice(["Which river flows through that town?", "Which river flows through {t}?", "What is the river there?"]).format(t=town),
         fact_sentence(town, "river", _RIVER_OF[town])),
        (rng.choice(["Which country is {t} the capital of?", "And which country is that town the capital of?"]).format(t=town),
         f"{town} is the capital of {country}."),
    ]
    return turns[: rng.randint(1, 4)]


def _dlg_country(rng):
    """Capital, then language, then the river of the capital."""
    country, cap, lang, river = rng.choice(_COUNTRIES)
    turns = [
        (rng.choice(_FACT_QUESTIONS["capital"]).format(e=country), fact_sentence(country, "capital", cap)),
        (rng.choice(["What language do people speak there?", "And which language is spoken in {c}?"]).format(c=country),
         fact_sentence(country, "language", lang)),
        (rng.choice(["Which river flows through {t}?", "Which river flows through the capital?", "And what is the river of that city?"]).format(t=cap),
         fact_sentence(cap, "river", river)),
    ]
    return turns[: rng.randint(1, 3)]


def _dlg_arithmetic(rng):
    """Running arithmetic: every answer is the starting number of the next question."""
    x, y = rng.randint(1, 30), rng.randint(1, 30)
    total = x + y
    turns = [(rng.choice(["What is {x} plus {y}?", "Add {x} and {y}."]).format(x=x, y=y), f"{x} plus {y} is {total}.")]
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(["add", "sub", "mul"] if total < 100 else ["add", "sub"])
        if op == "sub" and total > 0:
            k = rng.randint(1, total)
            q, a, total = rng.choice(["Now subtract {k}.", "Take away {k}.", "And minus {k}?"]), f"{total} minus {k} is {total - k}.", total - k
        elif op == "mul":
            k = rng.randint(2, 5)
            q, a, total = rng.choice(["Now multiply it by {k}.", "Multiply that by {k}.", "And times {k}?"]), f"{total} times {k} is {total * k}.", total * k
        else:
            k = rng.randint(1, 20)
            q, a, total = rng.choice(["Now add {k}.", "Add {k} to that.", "And plus {k}?"]), f"{total} plus {k} is {total + k}.", total + k
        turns.append((q.format(k=k), a))
    return turns


def _dlg_words(rng):
    """Repeat a phrase, then transform the phrase from the first turn."""
    w = _some_words(rng)
    later = [
        (rng.choice(["Now reverse it.", "Say it backwards, word by word.", "Reverse the words."]), " ".join(reversed(w))),
        (rng.choice(["How many words is that?", "Count the words.", "How many words did I say?"]), _count_answer(len(w))),
        (rng.choice(["Now sort them alphabetically.", "Put the words in alphabetical order."]), " ".join(sorted(w))),
    ]
    return [("Repeat after me: " + " ".join(w), " ".join(w))] + rng.sample(later, rng.randint(0, 3))


_DIALOGUE_KINDS = [_dlg_same_relation, _dlg_person, _dlg_country, _dlg_arithmetic, _dlg_words]


def _dialogue(rng: random.Random) -> dict:
    turns = rng.choice(_DIALOGUE_KINDS)(rng)
    return {"prompt": turns[-1][0], "response": turns[-1][1], "history": [list(t) for t in turns[:-1]]}


def _dialogue_split(d: dict) -> str | None:
    """Test if the last prompt is a test prompt. Train only if *every* user turn is a train
    prompt, so a test prompt never appears anywhere in training data. Otherwise unusable."""
    if split_of(d["prompt"]) == "test":
        return "test"
    return "train" if all(split_of(u) == "train" for u, _ in d["history"]) else None


def dialogues(n: int, *, seed: int = 0, split: str = "train") -> list[dict]:
    """{"prompt", "response", "history": [[user, assistant], ...]}: 1-4 coherent turns, the last one in prompt/response."""
    return _draw("dialogues", _dialogue, n, seed, split, _dialogue_split, lambda d: json.dumps(d))


# =========================================================================== word problems
APPLES_PROBLEM: dict = {
    "question": "The cafeteria had 23 apples. If they used 20 to make lunch and bought 6 more, how many apples do they have?",
    "steps": ["They used 20, so 23 - 20 = 3.", "They bought 6 more, so 3 + 6 = 9."],
    "solution": "They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9. The answer is 9.",
    "answer": 9,
    "n_steps": 2,
}
# items | verbs that make the number go down
_ITEMS = [(row[0], [v.strip() for v in row[1].split(",")]) for row in _rows("""
apples | eat, use, sell
books | give away, sell, lend out
marbles | lose, give away, trade away
coins | spend, lose, give away
stickers | use, give away, trade away
pages | read, tear out, use
cookies | eat, sell, give away
pencils | lose, give away, use up
stamps | use, sell, trade away
shells | give away, lose, sell
cards | give away, trade away, lose
eggs | use, sell, break
balloons | give away, pop, lose
beads | use, lose, give away
cupcakes | eat, sell, give away
tickets | sell, give away, use
seeds | plant, use, give away
crayons | lose, give away, break
""")]
_GROUPS = ["cafeteria", "bakery", "school", "class", "library", "shop", "club", "farm", "team"]
_ADD_VERBS = ["buy", "find", "collect", "win", "get"]
_CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets"]
_VERB_FORMS = {  # base: (third person present, past)
    "have": ("has", "had"), "buy": ("buys", "bought"), "find": ("finds", "found"), "collect": ("collects", "collected"),
    "win": ("wins", "won"), "get": ("gets", "got"), "eat": ("eats", "ate"), "use": ("uses", "used"),
    "sell": ("sells", "sold"), "give": ("gives", "gave"), "lend": ("lends", "lent"), "lose": ("loses", "lost"),
    "trade": ("trades", "traded"), "spend": ("spends", "spent"), "read": ("reads", "read"), "tear": ("tears", "tore"),
    "break": ("breaks", "broke"), "pop": ("pops", "popped"), "plant": ("plants", "planted"), "end": ("ends", "ended"),
    "split": ("splits", "split"), "keep": ("keeps", "kept"), "double": ("doubles", "doubled"), "triple": ("triples", "tripled"),
}


def _verb(phrase: str, past: bool, third: bool) -> str:
    """Conjugate the first word of a verb phrase: 'give away' -> 'gives away' / 'gave away'."""
    head, *rest = phrase.split()
    third_form, past_form = _VERB_FORMS[head]
    return " ".join([past_form if past else third_form if third else head] + rest)


def _wp_step(rng, x: int, items: str, sub_verbs: list[str], v) -> tuple[str, str, str, int] | None:
    """One operation on the running total x: (question clause, step clause, equation, new total),
    or None when the drawn operation does not fit x (no negatives, exact division, < 1000)."""
    kind = rng.choices(["add", "sub", "mul", "div"], weights=[3, 3, 1.5, 1.5])[0]
    if kind == "add" and x < 950:
        k, verb = rng.randint(1, 25), rng.choice(_ADD_VERBS)
        clause = f"{v(verb)} {k} more" + (" from a friend" if verb == "get" else "")
        return clause, f"{v(verb)} {k} more", f"{x} + {k} = {x + k}", x + k
    if kind == "sub" and x >= 2:
        k, verb = rng.randint(1, x - 1), rng.choice(sub_verbs + ["give"])
        if verb == "give":
            return f"{v('give')} {k} to a friend", f"{v('give')} away {k}", f"{x} - {k} = {x - k}", x - k
        clause = f"{v(verb)} {k}"
        if verb == "use" and items in ("apples", "eggs") and rng.random() < 0.5:
            clause += rng.choice([" to make lunch", " to bake a cake", " for a picnic"])
        return clause, f"{v(verb)} {k}", f"{x} - {k} = {x - k}", x - k
    if kind == "mul" and 1 <= x <= 60:
        m = rng.randint(2, 5)
        if m <= 3 and rng.random() < 0.5:
            clause = f"{v('double' if m == 2 else 'triple')} the number of {items}"
        else:
            clause = f"{v('end')} up with {m} times as many"
        return clause, clause, f"{x} * {m} = {x * m}", x * m
    if kind == "div":
        divisors = [m for m in range(2, 7) if x % m == 0 and x >= m]
        if divisors:
            m = rng.choice(divisors)
            pile = rng.choice(["piles", "bags", "groups"])
            clause = f"{v('split')} them into {m} equal {pile} and {v('keep')} one of the {pile}"
            return clause, f"{v('keep')} one of {m} equal {pile}", f"{x} / {m} = {x // m}", x // m
    return None


def _word_problem(rng: random.Random, n_steps: int) -> dict:
    items, sub_verbs = rng.choice(_ITEMS)
    past = rng.random() < 0.5
    if rng.random() < 0.5:
        p = _person(rng)
        subj, mid, pron, third = p["name"], p["name"], p["he"], True
    else:
        group = rng.choice(_GROUPS)
        subj, mid, pron, third = f"The {group}", f"the {group}", "they", False
    v = lambda phrase: _verb(phrase, past, third)
    have = _verb("have", past, True)
    steps, clauses = [], []
    if rng.random() < 0.3:  # the starting amount is itself a multiplication step
        a, b, cont = rng.randint(2, 9), rng.randint(2, 12), rng.choice(_CONTAINERS)
        opening = f"{subj} {have} {a} {cont} of {items} with {b} in each."
        steps.append(f"There {'were' if past else 'are'} {a} {cont} of {b}, so {a} * {b} = {a * b}.")
        x = a * b
    else:
        x = rng.randint(2, 40)
        opening = rng.choice([f"{subj} {have} {x} {items}.", f"At first, {mid} {have} {x} {items}."])
    while len(steps) < n_steps:
        op = _wp_step(rng, x, items, sub_verbs, v)
        if op is not None:
            clause, step_clause, equation, x = op
            clauses.append(clause)
            steps.append(f"{_cap(pron)} {step_clause}, so {equation}.")
    do, who = ("does", mid) if third else ("do", "they")
    if clauses and rng.random() < 0.5:  # "If they used 20 and bought 6 more, how many ...?"
        joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        question = f"{opening} If {pron} {joined}, how many {items} {do} {pron} have?"
    else:
        links = ["", "Then ", "After that, ", "Later, ", "Next, "]
        body = [_cap(f"{links[i]}{pron} {c}.") for i, c in enumerate(clauses)]
        ending = rng.choice(["now", "in the end", "at the end"])
        question = " ".join([opening] + body + [f"How many {items} {do} {who} have {ending}?"])
    return {"question": question, "steps": steps, "solution": " ".join(steps) + f" The answer is {x}.",
            "answer": x, "n_steps": len(steps)}


def word_problems(n: int, *, seed: int = 0, split: str = "train", n_steps: int | None = None) -> list[dict]:
    """GSM8K-style problems with 1-5 worked steps; the test split starts with APPLES_PROBLEM
    (when n_steps is None or 2), and the train split never contains it."""
    if n_steps is not None and (isinstance(n_steps, bool) or n_steps not in range(1, 6)):
        raise ValueError(f"n_steps must be None or an integer from 1 to 5, got {n_steps!r}")
    _check(n, split)
    apples = APPLES_PROBLEM["question"]
    first = [json.loads(json.dumps(APPLES_PROBLEM))] if split == "test" and n_steps in (None, 2) else []
    make = lambda rng: _word_problem(rng, n_steps or rng.randint(1, 5))
    split_fn = lambda d: None if d["question"] == apples else split_of(d["question"])
    return _draw("word_problems", make, n, seed, split, split_fn, lambda d: d["question"], first)


# =========================================================================== committed sample files
# name -> (train size, test size), all with seed 0; chosen so every file stays under 1 MiB.
# word_problems test has that many problems *per step count* (1..5).
_SAMPLE_SIZES = {"general": (2900, 500), "domain": (1400, 300), "instructions": (4000, 400),
                 "dialogues": (2500, 300), "word_problems": (2000, 100)}


def _sample(name: str, split: str) -> list:
    n = _SAMPLE_SIZES[name][SPLITS.index(split)]
    if name == "word_problems" and split == "test":  # n per step count, APPLES_PROBLEM first
        buckets = [word_problems(n, seed=0, split="test", n_steps=k) for k in range(1, 6)]
        return [buckets[1][0]] + buckets[0] + buckets[1][1:] + buckets[2] + buckets[3] + buckets[4]
    make = {"general": general_corpus, "domain": domain_corpus, "instructions": instructions,
            "dialogues": dialogues, "word_problems": word_problems}[name]
    return make(n, seed=0, split=split)


def _path(directory: Path, name: str, split: str) -> Path:
    return directory / f"{name}_{split}.{'txt' if name in ('general', 'domain') else 'jsonl'}"


def write_corpora(out_dir) -> dict[str, Path]:
    """Write the sample files (seed 0) into out_dir; return {"general_train": path, ...}.
    .txt: one document per paragraph (blank-line separated); .jsonl: one item per line."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NAMES:
        for split in SPLITS:
            items, path = _sample(name, split), _path(out_dir, name, split)
            if path.suffix == ".txt":
                text = "\n\n".join(items) + "\n"
            else:
                text = "".join(json.dumps(x) + "\n" for x in items)
            path.write_bytes(text.encode("ascii"))
            paths[f"{name}_{split}"] = path
    return paths


def load(name: str, split: str = "train") -> list:
    """Read a committed sample file from data/corpora: list of str for the corpora, list of dicts otherwise."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = _path(CORPORA_DIR, name, split)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with: python -m labkit data")
    text = path.read_text(encoding="ascii")
    if path.suffix == ".txt":
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    return [json.loads(line) for line in text.splitlines() if line.strip()]
