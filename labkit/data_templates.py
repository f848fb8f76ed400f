"""The word tables and sentence templates behind ``labkit.data``'s generators.

Why a module of its own: the ``labkit.data`` package should read as code (how a story is drawn, how a split is
kept disjoint), and these ~450 lines are data -- the fictional world the lab models learn about.
Edit a table here to change the world: every corpus, probe and question in the labs is drawn
from it by ``labkit.data`` with a fixed seed, so the committed files in ``data/corpora/`` must
then be regenerated (``python -m labkit data``).

Who uses what:

* facts (COUNTRIES, BIRDS, PEOPLE, MACHINES, RELATIONS): ``data.FACTS`` and ``data.DOMAIN_FACTS``;
  probed by ``data.fact_probes`` in lab 00 §6, lab 06 §4 and lab 11 §8; the domain facts are the
  knowledge task of lab 04 §3 (``data.domain_fact_instructions``, asked with DOMAIN_QUESTIONS).
* word tables and THEMES / BRIDGES: the general corpus that lab-tiny was pretrained on, and the
  text of lab 03 §9, lab 10 §5 and lab 15 §6 (``data.general_corpus``).
* PURPOSE ... DOMAIN_THEMES: the maintenance-log domain corpus that lab 06 fine-tunes on and
  lab 15 §6 retrieves from (``data.domain_corpus``).
* FACT_QUESTIONS, OPPOSITES, SIMPLE_WORDS: the instruction tasks of lab 09 and lab 16 §5
  (``data.instructions``); lab 14 asks the same FACT_QUESTIONS (``labkit.preference``).
* FOLLOW_UPS: multi-turn dialogues (``data.dialogues``, lab 09 §3).
* ITEMS ... VERB_FORMS: the GSM8K-style word problems of lab 08 (``data.word_problems``).
"""
from __future__ import annotations

__all__ = [
    "COUNTRIES", "BIRDS", "PEOPLE", "MACHINES", "RELATIONS", "FEMALE", "MALE", "TOWNS", "RIVER_OF",
    "JOBS", "PLACES", "ANIMALS", "PRODUCE", "GROCERIES", "SPICES", "DISHES", "OBJECTS", "RELATIVES",
    "TOPICS", "TIMES", "WEEKDAYS", "SEASONS", "TRANSPORT", "SCENERY", "WEATHER", "FEELINGS",
    "ACTIVITIES", "TOGETHER", "ADJ", "TOWN_ADJ", "NUMBERS", "INSTRUMENTS", "BUILDINGS", "THEMES",
    "THEME_NAMES", "BRIDGES", "BRIDGE_OF", "PURPOSE", "PARTS", "CONDITIONS", "CAUSES", "TOOLS",
    "DOMAIN_THEMES", "DOMAIN_THEME_NAMES", "ORDER_WORDS", "FACT_QUESTIONS", "OPPOSITES",
    "OPPOSITE_OF", "SIMPLE_WORDS", "DOMAIN_QUESTIONS", "FOLLOW_UPS", "ITEMS", "GROUPS", "ADD_VERBS",
    "CONTAINERS", "VERB_FORMS",
]


def _rows(text: str) -> list[tuple[str, ...]]:
    """Parse a table written one row per line, columns separated by '|'."""
    return [tuple(c.strip() for c in line.split("|")) for line in text.strip().splitlines()]


def _list(text: str) -> list[str]:
    """Parse a list of (possibly multi-word) phrases separated by ';'."""
    return [w.strip() for w in text.split(";") if w.strip()]


# =========================================================================== facts
# One row per fictional country: country | capital | language | river of the capital
COUNTRIES = _rows("""
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
BIRDS = list(zip(
    [b + " bird" for b in "zelk tarrow quillet fennet corrin dunlet ebbin flink gorrel hessel ibbet jessamy kerrow "
     "lindel mottle nibbit orrin pelwit rusket sallow tinnet umbral vesper wistle yellin".split()],
    "blue green red yellow orange purple white black grey brown pink silver golden "
    "blue green red yellow white black orange purple grey brown pink silver".split(),
))
# person | job (starts with a consonant: "works as a ...") | town where they were born
PEOPLE = _rows("""
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
MACHINES = _rows("""
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
RELATIONS = {
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


# =========================================================================== word tables
FEMALE = ("Anna Mia Sara Lucy Emma Clara Nina Rosa Lily Ella Maya Julia Helen Grace Alice Ruth Jane Kate Molly "
           "Hannah Eva Iris Lena Tara Zoe Amy Beth Dora Fay Judy Olga Paula Wendy Agnes Bella Cora Elsie Freya").split()
MALE = ("Ben Tom Leo Sam Max Jack Oscar Felix Hugo Paul Peter Omar Ivan Adam Noah Luke Owen Theo Carl Dan Eric "
         "Finn George Henry Jonas Karl Mark Nils Rob Victor Alan Bruno Colin David Frank Gus Ian Lars").split()
TOWNS = [cap for _, cap, _, _ in COUNTRIES]
RIVER_OF = {cap: river for _, cap, _, river in COUNTRIES}
JOBS = _rows("""
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
PLACES = _list("""market; library; bakery; harbour; park; school; station; museum; bridge; forest; farm; garden;
beach; lake; square; mill; orchard; castle; tower; hospital; theatre; cafe; post office; town hall; church; meadow;
bookshop; zoo; swimming pool; playground; cinema; gallery; workshop; barn; inn; hill; pond; vineyard; stable; dairy""")
# singular | plural | size | habitat | diet | feature
ANIMALS = _rows("""
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
PRODUCE = ("apples pears plums cherries grapes oranges lemons carrots potatoes onions beans peas tomatoes mushrooms "
            "eggs nuts berries peaches melons cucumbers radishes leeks figs turnips olives sausages biscuits").split()
GROCERIES = "bread cheese butter honey rice milk flour sugar jam tea coffee oats fish soup cream yogurt chocolate pasta".split()
SPICES = _list("salt; pepper; garlic; sugar; honey; butter; fresh herbs; cream; cheese; lemon juice; cinnamon")
DISHES = "soup stew pie cake salad omelette curry pudding tart risotto casserole crumble pizza sandwich".split()
OBJECTS = ("book lamp basket letter map key hat coat umbrella bag cup bottle kite ball box bell clock pen notebook "
            "camera bicycle boat ladder rope candle blanket chair table ring scarf bucket brush hammer jar plate spoon "
            "shelf drum flute guitar radio ticket painting mirror pillow teapot wallet watch compass lantern").split()
RELATIVES = "brother sister mother father grandmother grandfather aunt uncle cousin son daughter neighbour".split()
TOPICS = _list("""old ships; the stars; birds; the sea; ancient kings; mountains; trees; music; cooking; horses;
far away countries; the moon; insects; old castles; famous painters; rivers; clocks; trains; gardens; the weather;
bees; farming; stones and rocks; islands; lighthouses; maps""")
TIMES = _list("""in the morning; in the afternoon; in the evening; yesterday; last week; after lunch; before dinner;
at noon; later that day; early in the morning; on a quiet afternoon""")
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
SEASONS = _list("last spring; last summer; last autumn; last winter; two years ago; a month ago; last year")
TRANSPORT = "train bus boat bicycle car ferry coach".split()
SCENERY = _list("""green hills; small farms; a wide river; old windmills; dark forests; fields of wheat;
tall mountains; quiet villages; a long lake; herds of cows; orchards full of fruit; a stone bridge""")
# weather | what a sensible person did about it
WEATHER = _rows("""
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
FEELINGS = _rows("""
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
ACTIVITIES = _list("""read a book about {topic}; wrote a letter to {his} {relative}; painted a picture of the {place};
repaired an old {object}; played chess with {his} {relative}; went for a long walk by the river; fed the ducks at the lake;
cleaned the whole house; visited {his} {relative} in {town2}; planted {produce} in the garden;
listened to music on the radio; baked a {dish} for the neighbours; swam in the lake; rode {his} bicycle to the {place};
helped a neighbour carry some boxes; learned a new song on the {instrument}; sorted old photographs;
watched the boats in the harbour; drew a map of {town}; knitted a scarf for {his} {relative}; washed the windows;
made a kite with the children; sat in the {place} and watched the birds; wrote in {his} diary; mended a hole in {his} coat""")
TOGETHER = _list("""play chess in the {place}; walk along the river; cook dinner together; go swimming in the lake;
sing in the town choir; work in the garden; visit the market; read books in the library""")
ADJ = "quick quiet clever gentle shy strong curious playful patient noisy careful brave calm busy friendly lazy".split()
TOWN_ADJ = "quiet busy pretty old small friendly peaceful lively clean famous".split()
NUMBERS = "two three four five six seven eight nine ten eleven twelve".split()
INSTRUMENTS = "violin piano flute guitar drum harp trumpet".split()
BUILDINGS = _list("stone bridge; clock tower; town hall; church; windmill; castle; library; lighthouse")


# =========================================================================== general corpus
# Each theme: intro sentence, middle sentences (kept in table order), outro sentence.
THEMES = {
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
THEME_NAMES = list(THEMES)
# Short sentences that lead into a fact, so fact sentences sit naturally in a story.
BRIDGES = {
    "country": ["{name} once read a book about {e}.", "{name} has a cousin who lives in {e}.", "At school {he} learned about {e}."],
    "town": ["{name} has visited {e} many times.", "Last year {name} spent a week in {e}."],
    "bird": ["{name} saw {a_e} in the {place}.", "{name} likes to watch birds, especially the {e}."],
    "person": ["{name} met {e} at the {place}.", "{e} is an old friend of {name}."],
}
BRIDGE_OF = {"capital": "country", "language": "country", "river": "town", "colour": "bird", "job": "person", "born": "person"}


# =========================================================================== domain corpus
PURPOSE = {
    "pump": "moving coolant around the plant", "lathe": "cutting and shaping metal rods",
    "compressor": "supplying compressed air to the tools", "press": "stamping steel sheets into panels",
    "boiler": "making steam for the heating system", "turbine": "turning steam into electric power",
    "mixer": "mixing paint and resin", "drill": "drilling holes in steel plates", "loom": "weaving heavy cloth",
    "crane": "lifting heavy loads in the yard", "furnace": "melting scrap metal", "generator": "supplying backup power",
    "conveyor": "moving boxes between stations", "grinder": "grinding and polishing metal parts",
    "winch": "pulling heavy cables", "saw": "cutting timber into boards", "kiln": "firing clay tiles",
    "fan": "cooling the machine hall", "extruder": "pushing plastic through a shaped die", "hoist": "raising parts to the upper floor",
}
PARTS = ("valve gasket seal bearing belt filter spring shaft nozzle coupling piston gear bushing fuse relay sensor "
          "hose clamp flange pulley rotor motor switch thermostat").split()
CONDITIONS = "worn cracked loose corroded clogged leaking bent scored dirty misaligned".split()
CAUSES = _list("""a blocked filter; a loose belt; a low oil level; a damaged seal; a faulty sensor; a worn bearing;
a bent shaft; dirt in the fuel line; a broken spring; a failed relay""")
TOOLS = _list("torque wrench; multimeter; feeler gauge; hex key; grease gun; pressure gauge; dial indicator; spanner")
DOMAIN_THEMES = {
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
DOMAIN_THEME_NAMES = list(DOMAIN_THEMES)
ORDER_WORDS = ["First", "Next", "Then", "After that", "Now", "Then"]


# =========================================================================== instructions
FACT_QUESTIONS = {
    "capital": ["What is the capital of {e}?", "Which city is the capital of {e}?"],
    "language": ["What language do people speak in {e}?", "Which language is spoken in {e}?"],
    "river": ["Which river flows through {e}?", "What is the river of {e}?"],
    "colour": ["What colour is the {e}?", "What is the colour of the {e}?"],
    "job": ["What does {e} do for a living?", "What is the job of {e}?"],
    "born": ["Where was {e} born?", "In which town was {e} born?"],
}
OPPOSITES = [tuple(p.split("/")) for p in (
    "hot/cold up/down day/night fast/slow open/closed wet/dry early/late full/empty left/right in/out win/lose "
    "push/pull buy/sell rich/poor happy/sad loud/quiet inside/outside above/below before/after first/last "
    "strong/weak thick/thin easy/hard clean/dirty awake/asleep north/south east/west summer/winter arrive/leave give/take"
).split()]
OPPOSITE_OF = {**{a: b for a, b in OPPOSITES}, **{b: a for a, b in OPPOSITES}}
SIMPLE_WORDS = list(dict.fromkeys(  # dict.fromkeys: de-duplicate but keep a fixed order
    [w for w in OBJECTS + PRODUCE + GROCERIES + [a[0] for a in ANIMALS] + ADJ + TOWN_ADJ]
    + "red blue green runs jumps sleeps sings walks swims eats reads the a big little".split()
))
DOMAIN_QUESTIONS = {
    "lubricant": ["What is the {e} lubricated with?", "Which lubricant does the {e} need?"],
    "weak_part": ["What is the weakest part of the {e}?", "Which part of the {e} fails first?"],
    "maker": ["Who makes the {e}?", "Which company builds the {e}?"],
    "overheat_code": ["What is the overheat code of the {e}?", "Which code does the {e} show when it overheats?"],
}


# =========================================================================== dialogues
FOLLOW_UPS = ["What about {e}?", "And {e}?", "How about {e}?", "And what about {e}?"]


# =========================================================================== word problems
# items | verbs that make the number go down
ITEMS = [(row[0], [v.strip() for v in row[1].split(",")]) for row in _rows("""
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
GROUPS = ["cafeteria", "bakery", "school", "class", "library", "shop", "club", "farm", "team"]
ADD_VERBS = ["buy", "find", "collect", "win", "get"]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets"]
VERB_FORMS = {  # base: (third person present, past)
    "have": ("has", "had"), "buy": ("buys", "bought"), "find": ("finds", "found"), "collect": ("collects", "collected"),
    "win": ("wins", "won"), "get": ("gets", "got"), "eat": ("eats", "ate"), "use": ("uses", "used"),
    "sell": ("sells", "sold"), "give": ("gives", "gave"), "lend": ("lends", "lent"), "lose": ("loses", "lost"),
    "trade": ("trades", "traded"), "spend": ("spends", "spent"), "read": ("reads", "read"), "tear": ("tears", "tore"),
    "break": ("breaks", "broke"), "pop": ("pops", "popped"), "plant": ("plants", "planted"), "end": ("ends", "ended"),
    "split": ("splits", "split"), "keep": ("keeps", "kept"), "double": ("doubles", "doubled"), "triple": ("triples", "tripled"),
}
