"""A seeded generator of a small DialogSum-style corpus, so the offline default needs no downloads.

Every dialogue comes from one of 22 everyday scenario families. Each family varies its phrasing turn
by turn, adds optional small-talk turns, and fills slots (names, items, times, places, prices,
quantities) that appear in the dialogue *and* in the summary, so a model has to read the dialogue to
summarise it. Rows use the HF hub DialogSum layout: ``{"id", "dialogue", "summary", "topic"}``.

The test split holds (family, name, item) combinations that never occur in train or validation, so
a model that memorised training pairs cannot score well on it.

Build-time only (the package ships the files, not this generator). Regenerate the committed files with::

    python scripts/build_corpus.py --out dialogtune/assets/dialogs

``scripts/build_tiny_t5.py`` and the tests import it from here. It is long because most of it is data
written as code: the 22 families' phrasings, one function each, read top to bottom like a dialogue.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "validation", "test")

# Shared slot pools. Small on purpose: every value is seen in training, only combinations are held out.
NAMES = [
    "Mr. Smith", "Ms. Lee", "Mrs. Brown", "Mr. Garcia", "Ms. Chen", "Mr. Patel", "Mrs. Novak",
    "Mr. Okafor", "Ms. Rossi", "Mr. Kim", "Ms. Walsh", "Mr. Haddad", "Mrs. Silva", "Mr. Jensen",
    "Ms. Tanaka", "Mr. Dubois", "Mrs. Murphy", "Mr. Costa",
]
FIRST_NAMES = ["Tom", "Anna", "Jack", "Lucy", "Sam", "Mia", "Ben", "Emma", "Leo", "Nora", "Peter", "Grace"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9 a.m.", "10 a.m.", "11:30 a.m.", "1 p.m.", "2:30 p.m.", "4 p.m.", "5:30 p.m.", "7 p.m."]
COUNTS = ["two", "three", "four", "five", "six"]
CITIES = ["Boston", "Chicago", "Denver", "Seattle", "Dallas", "Toronto", "Miami", "Atlanta"]
COLORS = ["black", "blue", "red", "grey", "green", "brown"]

# Off-topic remarks in the third person. People talk like this, and it is where a model that has only
# read dialogues meets the narrating verbs ("buys", "tells", "offers") that summaries are written with.
SMALL_TALK = [
    "By the way, my brother says you are the best in town.", "My neighbour buys everything here.",
    "A friend of mine sells cars, so he tells me a lot about prices.", "My sister always orders online.",
    "My wife looks after our bills, and she asks a lot of questions.", "Everyone who visits this city calls it beautiful.",
    "My colleague usually makes the plans and gives me a list.", "My boss explains everything twice.",
    "My mother suggests I should always ask for a discount.", "My friend invites people over and meets them in the park.",
    "My cousin lends me her car when she goes to town.", "My uncle opens his shop at nine and gets home late.",
    "My daughter sends me messages every day.", "The man on TV who reports the news is my neighbour.",
    "My father thinks everything is too expensive these days.", "My roommate decides everything at the last minute.",
    "My aunt returns almost everything she buys.", "My brother switches to a new phone plan every year.",
    "He fixes old bikes and joins races on weekends.", "She signs up for every class and likes all of them.",
    "My parents agree on everything, which is rare.", "My boss offers to help when he is in a good mood.",
    "After work, my sister visits our parents.", "Each time my son applies for a job, he describes it to me.",
    "The doctor in my town prescribes tea for everything.", "My friend borrows books and promises to return them.",
    "My teacher shows us films, which we like.", "They say the restaurant on the corner is good.",
    "My sister helps at the school and interviews the new teachers.", "My wife decides where we go, and I agree.",
    "The town market is held every Sunday, and he deposits the money on Monday.",
    "The bus leaving at noon is always in trouble with traffic.", "My suitcase weighs a lot, so I keep weighing it at home.",
]
REPLIES = ["Really? That's funny.", "Oh, I see.", "Ha, that sounds familiar.", "Interesting.", "That's nice.", "I know what you mean."]

# One in HOLDOUT_MODULUS (family, name, item) combinations is reserved for the test split.
HOLDOUT_MODULUS = 6


def is_heldout(family: str, name: str, item: str) -> bool:
    """True if this (family, name, item) combination belongs to the test split only."""
    # crc32, not hash(): Python's str hash is salted per process and would break determinism.
    return zlib.crc32(f"{family}|{name}|{item}".encode()) % HOLDOUT_MODULUS == 0


@dataclass
class Example:
    """One generated dialogue with the slots it was built from (the rows drop the slots)."""

    family: str
    name: str
    item: str
    topic: str
    turns: list[tuple[int, str]]
    summary: str
    slots: dict[str, str] = field(default_factory=dict)

    @property
    def dialogue(self) -> str:
        """The turns in DialogSum form: ``#PersonN#: text`` joined by newlines."""
        return "\n".join(f"#Person{who}#: {text}" for who, text in self.turns)


class _Builder:
    """Collects turns for one dialogue; every phrase is picked from alternatives and slot-filled."""

    def __init__(self, rng: random.Random, slots: dict[str, str]):
        self.rng = rng
        self.slots = slots
        self.turns: list[tuple[int, str]] = []

    def fill(self, *options: str) -> str:
        return self.rng.choice(options).format(**self.slots)

    def say(self, who: int, *options: str) -> None:
        text = self.fill(*options)
        text = text[0].upper() + text[1:]
        if self.turns and self.turns[-1][0] == who:
            # Same speaker twice in a row reads as one turn, as in DialogSum.
            self.turns[-1] = (who, f"{self.turns[-1][1]} {text}")
        else:
            self.turns.append((who, text))

    def aside(self, p: float, asker: int, questions: tuple[str, ...], answerer: int, answers: tuple[str, ...]) -> None:
        """Optional question and its answer; the answer shares the question's index when the lists pair up."""
        if self.rng.random() < p:
            i = self.rng.randrange(len(questions))
            self.say(asker, questions[i].format(**self.slots))
            answer = answers[i] if len(answers) == len(questions) else self.rng.choice(answers)
            self.say(answerer, answer.format(**self.slots))

    def maybe(self, p: float, who: int, *options: str) -> None:
        # Optional turns are what make turn counts vary within a family.
        if self.rng.random() < p:
            self.say(who, *options)

    def chat(self, p: float = 0.35) -> None:
        """Optional off-topic remark and reply at a random point; summaries ignore it, as in DialogSum."""
        if self.rng.random() < p and len(self.turns) >= 2:
            # Never between a question and its answer.
            spots = [i for i in range(1, len(self.turns)) if not self.turns[i - 1][1].endswith("?")]
            if not spots:
                return
            at = self.rng.choice(spots)
            who = 3 - self.turns[at - 1][0]
            remark, reply = self.rng.choice(SMALL_TALK), self.rng.choice(REPLIES)
            self.turns[at:at] = [(who, remark), (3 - who, reply)]

    def greet(self, staff: int = 2) -> None:
        """Optional opening: the customer greets, the staff member offers help."""
        customer = 3 - staff
        if self.rng.random() < 0.6:
            self.say(customer, "Hello.", "Hi, good morning.", "Good afternoon.", "Excuse me.")
            self.say(staff, "Hello, how can I help you?", "Good morning. What can I do for you?",
                     "Hi there. How may I help you today?", "Yes? What can I do for you?")

    def close(self, customer: int = 1) -> None:
        """Optional closing thanks."""
        if self.rng.random() < 0.6:
            self.say(customer, "Thank you very much.", "Thanks a lot for your help.", "Great, thank you.",
                     "That's very kind of you. Thanks.")
            self.maybe(0.7, 3 - customer, "You're welcome.", "My pleasure. Have a nice day.",
                       "No problem. Goodbye.", "You're welcome. See you.")


# A family scripts one dialogue for a (name, item) pair and returns its builder and summary;
# generate_examples adds the optional small talk last, after the summary is written.
Scripted = tuple[_Builder, str]
Family = Callable[[random.Random, str, str], Scripted]
FAMILIES: dict[str, tuple[str, list[str], Family]] = {}


def _family(name: str, topic: str, items: list[str]) -> Callable[[Family], Family]:
    """Register a scenario family under its topic with the items its combinations range over."""

    def register(fn: Family) -> Family:
        FAMILIES[name] = (topic, items, fn)
        return fn

    return register


@_family("hotel", "hotel booking", ["single", "double", "twin", "family", "suite", "deluxe"])
def _hotel(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, room=item, nights=rng.choice(COUNTS), day=rng.choice(DAYS),
             price=f"${rng.randrange(80, 260, 10)}", alt=f"${rng.randrange(60, 80, 5)}")
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'd like to book a {room} room for {nights} nights from {day}.",
          "Do you have a {room} room available from {day}? I need it for {nights} nights.",
          "I want to reserve a {room} room, please, for {nights} nights, starting {day}.")
    b.say(2, "May I have your name, please?", "Sure. What name should I put the booking under?",
          "Of course. Could I have your name?")
    b.say(1, "It's {name}.", "My name is {name}.", "{name}. That's my name.")
    b.say(2, "Thank you, {name}. We have one at {price} a night.", "Let me check. Yes, there is one for {price} a night.",
          "We have a {room} room left. It costs {price} a night, breakfast included.")
    b.aside(0.5, 1, ("Does that include breakfast?", "Is there free parking?", "Does the room have a view?",),
            2, ("Yes, it does.", "I'm afraid not, but it is very quiet.", "Yes, the guests love it.",))
    if rng.random() < 0.7:
        b.say(1, "That's fine. I'll take it.", "Great, please book it for me.", "Sounds good. I'll take it.")
        b.say(2, "Done. Your room is booked, {name}.", "All right, it's reserved for you.",
              "Your booking is confirmed.")
        summary = b.fill(
            "{name} wants to book a {room} room for {nights} nights from {day}. #Person2# offers one at {price} a night and {name} takes it.",
            "{name} books a {room} room for {nights} nights starting {day}. The room costs {price} a night.",
            "#Person2# helps {name} reserve a {room} room for {nights} nights from {day} at {price} a night.")
    else:
        b.say(1, "Hmm, that's too expensive for me. Do you have anything cheaper?",
              "That's more than I wanted to pay. Is there a cheaper room?")
        b.say(2, "Only a small single room at {alt}.", "We have a single room for {alt}, but it's very small.")
        b.say(1, "No, thanks. I'll look somewhere else.", "I think I'll try another hotel, thanks.")
        summary = b.fill(
            "{name} wants a {room} room for {nights} nights from {day}, but it costs {price} a night. {name} thinks it is too expensive and decides to look elsewhere.",
            "{name} asks #Person2# for a {room} room for {nights} nights from {day}. At {price} a night it is too expensive, so {name} doesn't book it.")
    b.close()
    return b, summary


@_family("doctor", "doctor's visit", ["a headache", "a sore throat", "a cough", "back pain", "a fever", "a stomachache", "a rash"])
def _doctor(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, symptom=item, days=rng.choice(COUNTS),
             medicine=rng.choice(["some tablets", "a cream", "some syrup", "an antibiotic"]),
             times=rng.choice(["twice", "three times", "once"]), back=rng.choice(DAYS))
    b = _Builder(rng, s)
    b.say(2, "Good morning, {name}. What seems to be the problem?", "Come in, {name}. How are you feeling?",
          "Hello, {name}. What brings you here today?")
    b.say(1, "I've had {symptom} for {days} days.", "I have {symptom}. It started {days} days ago.",
          "Doctor, I've been suffering from {symptom} for {days} days now.")
    b.aside(0.6, 2, ("Have you taken anything for it?", "Is it getting worse?", "Did you sleep well last night?"),
            1, ("Not really, I didn't want to take anything.", "A little worse every day, I think.", "No, it kept me awake."))
    b.say(2, "Let me have a look. Hmm, it's nothing serious.", "I'll examine you. It doesn't look serious.",
          "Let me check. It's not serious, don't worry.")
    b.say(2, "I'll give you {medicine}. Take it {times} a day.", "Take {medicine} {times} a day and get some rest.",
          "I'm prescribing {medicine}. You should take it {times} a day.")
    b.say(1, "Should I come back?", "Do I need to see you again?", "When should I come back?")
    b.say(2, "Come back on {back} if you don't feel better.", "Yes, see me on {back} if it doesn't improve.")
    b.close()
    summary = b.fill(
        "{name} has had {symptom} for {days} days. The doctor says it isn't serious, prescribes {medicine} {times} a day and asks {name} to come back on {back} if it doesn't improve.",
        "{name} visits the doctor because of {symptom} that started {days} days ago. #Person2# gives {name} {medicine} to take {times} a day and tells {name} to return on {back} if needed.")
    return b, summary


@_family("interview", "job interview", ["sales manager", "accountant", "nurse", "web designer", "teacher", "chef", "driver"])
def _interview(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, job=item, ajob=("an " if item[0] in "aeiou" else "a ") + item, years=rng.choice(COUNTS), company=rng.choice(["Acme", "Globex", "Initech", "Northwind", "Umbrella", "Stark"]),
             salary=f"${rng.randrange(30, 90, 5)},000", start=rng.choice(DAYS))
    b = _Builder(rng, s)
    b.say(2, "Please have a seat, {name}. You're applying for the {job} position, right?",
          "Good morning, {name}. Thanks for coming in for the {job} job.",
          "Hello, {name}. So you are interested in the position of {job}?")
    b.say(1, "Yes, that's right.", "Yes. I'm very interested in it.", "That's right, thank you for seeing me.")
    b.say(2, "Tell me about your experience.", "What experience do you have?", "Why do you think you're a good fit?")
    b.say(1, "I worked as {ajob} at {company} for {years} years.", "I have {years} years of experience as {ajob} at {company}.",
          "I spent {years} years at {company}, where I was {ajob}.")
    b.aside(0.5, 2, ("Why did you leave {company}?", "What did you like most about {company}?",),
            1, ("I want new challenges.", "I liked the team, but I want to grow.",))
    b.aside(0.6, 1, ("May I ask about the salary?", "What is the salary for this job?",),
            2, ("It starts at {salary} a year.", "We offer {salary} a year to start.",))
    if rng.random() < 0.6:
        b.say(2, "I think you'd fit in well. Can you start on {start}?", "We'd like to offer you the job. Could you start on {start}?")
        b.say(1, "Yes, I can start on {start}.", "Of course. {start} is fine.")
        summary = b.fill(
            "{name} interviews for the {job} position and talks about {years} years as {ajob} at {company}. #Person2# offers {name} the job starting on {start}.",
            "{name} has {years} years of experience at {company} and applies to be {ajob}. #Person2# is impressed and {name} will start on {start}.")
    else:
        b.say(2, "Thank you. We'll let you know by {start}.", "We will call you by {start} with our decision.")
        b.say(1, "Thank you for your time.", "I look forward to hearing from you.")
        summary = b.fill(
            "{name} interviews for the {job} position and describes {years} years of work at {company}. #Person2# will tell {name} the decision by {start}.",
            "In the interview for the {job} job, {name} talks about {years} years at {company}. #Person2# promises an answer by {start}.")
    return b, summary


@_family("shopping", "shopping", ["a sweater", "a pair of jeans", "a leather jacket", "a winter coat", "a dress", "a pair of boots", "a scarf"])
def _shopping(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, thing=item, color=rng.choice(COLORS), size=rng.choice(["small", "medium", "large"]),
             price=f"${rng.randrange(20, 200, 5)}", other=rng.choice([c for c in COLORS]))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'm looking for {thing} in {color}.", "Do you have {thing} in {color}?", "I'd like to buy {thing}, {color} if possible.")
    b.say(2, "What size do you wear?", "Sure. What size?", "Certainly. Which size do you need?")
    b.say(1, "{size}, please.", "I usually wear {size}.", "A {size}, I think.")
    b.say(2, "Here you are. This one is {price}.", "This one is in {size}. It's {price}.", "We have this one for {price}.")
    b.aside(0.5, 1, ("Can I try it on?", "Where is the fitting room?",),
            2, ("Sure, the fitting room is over there.", "Of course, go ahead.",))
    if rng.random() < 0.65:
        b.say(1, "It fits well. I'll take it.", "I like it. I'll buy it.", "Perfect, I'll take it.")
        b.say(2, "Cash or card?", "Great. How would you like to pay?")
        b.say(1, "By card. My name is {name}, by the way. I'm a member.", "Card, please. The membership is under {name}.")
        summary = b.fill(
            "{name} buys {thing} in {color}, size {size}, for {price}.",
            "{name} wants {thing} in {color}. #Person2# finds a {size} one for {price} and {name} buys it by card.")
    else:
        b.say(1, "Hmm, {price} is a bit much. Do you have it in {other}?", "It's nice, but {price} is too expensive for me.")
        b.say(2, "Sorry, that's the only one left.", "I'm afraid not.")
        b.say(1, "Then I'll leave it. I'm {name}, could you call me if you get more?", "OK, I'll think about it. You can reach me under the name {name}.")
        summary = b.fill(
            "{name} looks for {thing} in {color}, size {size}, but thinks {price} is too expensive and doesn't buy it.",
            "{name} wants {thing} in {color}. It costs {price}, which is too much, so {name} leaves without it.")
    return b, summary


@_family("directions", "asking directions", ["the post office", "the train station", "the museum", "the city library", "the nearest bank", "the hospital", "the bus stop"])
def _directions(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, place=item, street=rng.choice(["Main Street", "Oak Avenue", "Park Road", "King Street", "River Lane"]),
             turn=rng.choice(["left", "right"]), corner=rng.choice(["first", "second", "third"]), minutes=rng.choice(["five", "ten", "fifteen"]))
    b = _Builder(rng, s)
    b.say(1, "Excuse me, could you tell me how to get to {place}?", "Sorry to bother you. Where is {place}?",
          "Excuse me, I'm lost. I'm looking for {place}.")
    b.say(2, "Sure. Go straight along {street} and turn {turn} at the {corner} corner.",
          "Walk down {street}, then take the {corner} turn on the {turn}.",
          "Follow {street} and turn {turn} at the {corner} corner.")
    b.aside(0.6, 1, ("Is it far?", "How long does it take on foot?",),
            2, ("About {minutes} minutes on foot.", "Not far. It's a {minutes} minute walk.",))
    b.say(1, "Thank you. I'm {name}, I'm new in town.", "Thanks. By the way, I'm {name}. I just moved here.",
          "Great. I'm {name}, I'm visiting.")
    b.say(2, "Welcome, {name}. You can't miss it.", "Nice to meet you, {name}. Enjoy your stay.")
    summary = b.fill(
        "{name} asks #Person2# the way to {place}. #Person2# says to go along {street} and turn {turn} at the {corner} corner.",
        "{name} is new in town and looks for {place}. #Person2# explains the way: along {street}, then {turn} at the {corner} corner.")
    return b, summary


@_family("restaurant", "ordering food", ["steak", "grilled salmon", "chicken curry", "vegetable pasta", "roast duck", "a cheeseburger", "seafood soup"])
def _restaurant(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, dish=item, drink=rng.choice(["orange juice", "red wine", "a cola", "sparkling water", "iced tea"]),
             side=rng.choice(["fries", "a salad", "rice", "mashed potatoes"]), dessert=rng.choice(["apple pie", "ice cream", "a cheesecake"]))
    b = _Builder(rng, s)
    b.say(2, "Good evening. Do you have a reservation?", "Welcome. Do you have a booking?")
    b.say(1, "Yes, under {name}.", "Yes, a table for {name}.", "Yes, the name is {name}.")
    b.say(2, "This way, please. Are you ready to order?", "Here is your table. What would you like?")
    b.say(1, "I'll have the {dish} with {side}.", "I'd like the {dish}, and {side} on the side.", "Can I get the {dish} with {side}, please?")
    b.say(2, "Anything to drink?", "And what would you like to drink?")
    b.say(1, "{drink}, please.", "Just {drink}.", "I'll have {drink}.")
    if rng.random() < 0.5:
        b.say(2, "Would you like dessert?", "Any dessert for you?")
        b.say(1, "Yes, {dessert}, please.", "I'll try the {dessert}.")
        summary = b.fill(
            "{name} has a reservation and orders the {dish} with {side}, {drink} and {dessert} for dessert.",
            "At the restaurant, {name} orders {dish} with {side}, {drink}, and {dessert}.")
    else:
        if rng.random() < 0.5:
            b.say(2, "Would you like dessert?", "Any dessert for you?")
            b.say(1, "No dessert, thanks.", "No, I'm on a diet.")
        summary = b.fill(
            "{name} has a reservation and orders the {dish} with {side} and {drink}.",
            "At the restaurant, {name} orders {dish} with {side} and {drink} to drink.")
    return b, summary


@_family("car", "car repair", ["the brakes", "the engine light", "a flat tire", "the air conditioning", "the battery", "a strange noise"])
def _car(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, problem=item, car=rng.choice(["Toyota", "Ford", "Honda", "Volkswagen", "Mazda"]),
             cost=f"${rng.randrange(50, 600, 10)}", ready=rng.choice(DAYS), time=rng.choice(TIMES))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "There is something wrong with my {car}. It's {problem}.", "My {car} has a problem with {problem}.",
          "Could you look at my {car}? I think it's {problem}.")
    b.say(2, "Let me take a look.", "OK, I'll check it.", "Sure, leave it with me for a minute.")
    b.say(2, "Yes, it's {problem}. It will cost about {cost} to fix.", "I found it. Fixing {problem} will be around {cost}.")
    b.aside(0.5, 1, ("That's a lot. Is it really necessary?", "Can't you do it cheaper?",),
            2, ("I'm afraid so. It isn't safe otherwise.", "That's already a fair price.",))
    b.say(1, "When will it be ready?", "How long will it take?")
    b.say(2, "On {ready} at {time}.", "It will be ready on {ready}, around {time}.")
    b.say(1, "Fine. The name is {name}.", "OK. Please call {name} when it's done.")
    summary = b.fill(
        "{name}'s {car} has trouble with {problem}. #Person2# will fix it for about {cost} and it will be ready on {ready} at {time}.",
        "{name} brings a {car} in because of {problem}. The repair costs about {cost} and will be done on {ready} at {time}.")
    return b, summary


@_family("return", "returning an item", ["a toaster", "a pair of shoes", "a lamp", "a phone case", "a coffee maker", "a backpack"])
def _return(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, thing=item, reason=rng.choice(["it's broken", "it's the wrong size", "it doesn't work", "the color is wrong"]),
             ago=rng.choice(COUNTS), price=f"${rng.randrange(15, 120, 5)}")
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'd like to return {thing}, because {reason}.", "I bought {thing} here, but {reason}. Can I return it?",
          "I want to bring back {thing} because {reason}.")
    b.say(2, "When did you buy it?", "Do you have the receipt?", "When was it purchased?")
    b.say(1, "{ago} days ago. Here is the receipt.", "I bought it {ago} days ago, and I have the receipt.")
    b.say(2, "Under what name?", "Can I have your name?")
    b.say(1, "{name}.", "It's {name}.")
    if rng.random() < 0.5:
        b.say(2, "Would you like a refund or an exchange?", "Do you want your money back or another one?")
        b.say(1, "A refund, please.", "I'd rather have my money back.")
        b.say(2, "OK, here is your {price}.", "Fine, I'll refund the {price}.")
        summary = b.fill(
            "{name} returns {thing} bought {ago} days ago because {reason}. #Person2# gives {name} a refund of {price}.",
            "{name} brings back {thing} because {reason} and gets the {price} refunded.")
    else:
        b.say(2, "We can give you a new one.", "I can exchange it for a new one.")
        b.say(1, "An exchange is fine.", "OK, I'll take a new one.")
        summary = b.fill(
            "{name} returns {thing} bought {ago} days ago because {reason}. #Person2# exchanges it for a new one.",
            "{name} brings back {thing} because {reason} and gets a new one instead.")
    return b, summary


@_family("luggage", "lost luggage", ["a black suitcase", "a red backpack", "a brown duffel bag", "a blue suitcase", "a grey travel bag"])
def _luggage(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, bag=item, flight=f"{rng.choice(['AC', 'UA', 'BA', 'LH'])} {rng.randrange(100, 990)}",
             city=rng.choice(CITIES), hotel=rng.choice(["the Plaza Hotel", "the Grand Hotel", "the Star Inn", "the Harbor Hotel"]),
             contents=rng.choice(["my laptop", "all my clothes", "some presents", "my medicine"]))
    b = _Builder(rng, s)
    b.say(1, "Excuse me, my luggage didn't arrive.", "Hello, I can't find my bag.", "My bag is missing.")
    b.say(2, "I'm sorry. What flight were you on?", "Which flight did you take?")
    b.say(1, "Flight {flight} from {city}.", "I came in on {flight} from {city}.")
    b.say(2, "Can you describe the bag?", "What does it look like?")
    b.say(1, "It's {bag}.", "{bag}, with a name tag.")
    b.maybe(0.6, 1, "It has {contents} in it.", "I'm worried, {contents} is in there.")
    b.say(2, "Your name and where you're staying, please.", "Where can we deliver it?")
    b.say(1, "{name}, at {hotel}.", "I'm {name}. I'm staying at {hotel}.")
    b.say(2, "We'll deliver it to {hotel} as soon as it arrives.", "We'll send it to {hotel} once we find it.")
    summary = b.fill(
        "{name}'s bag is missing after flight {flight} from {city}. {name} describes it as {bag} and #Person2# will deliver it to {hotel}.",
        "{name} reports {bag} lost on flight {flight} from {city}. #Person2# promises to send it to {hotel}.")
    return b, summary


@_family("bank", "opening an account", ["a savings account", "a checking account", "a student account", "a joint account", "a business account"])
def _bank(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, account=item, deposit=f"${rng.randrange(50, 1000, 50)}",
             doc=rng.choice(["passport", "driver's license", "ID card"]), card=rng.choice(["five", "seven", "ten"]))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'd like to open {account}.", "I want to open {account}, please.", "Can I open {account} here?")
    b.say(2, "Sure. Do you have an ID?", "Of course. I need some ID.", "Certainly. Have you brought an ID?")
    b.say(1, "Here is my {doc}.", "Yes, I've got my {doc}.")
    b.say(2, "Thank you, {name}. How much would you like to deposit?", "Thanks, {name}. What will your first deposit be?")
    b.say(1, "{deposit} to start.", "I'll put in {deposit}.")
    b.aside(0.6, 1, ("When will I get my card?", "Do I get a bank card?",),
            2, ("It will arrive in {card} days.", "Your card will be mailed within {card} days.",))
    summary = b.fill(
        "{name} opens {account} with a {doc} as ID and deposits {deposit}.",
        "#Person2# helps {name} open {account}. {name} shows a {doc} and makes a first deposit of {deposit}.")
    return b, summary


@_family("phone", "phone plan", ["the unlimited plan", "the 10 GB plan", "the family plan", "the basic plan", "the prepaid plan"])
def _phone(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, plan=item, price=f"${rng.randrange(15, 90, 5)}", months=rng.choice(["12", "18", "24"]),
             phone=rng.choice(["a new phone", "a free phone", "a discount on a phone"]))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "My current plan is too expensive. What else do you have?", "I'm thinking of changing my phone plan.",
          "I want a new phone plan.")
    b.say(2, "We have {plan} for {price} a month.", "How about {plan}? It's {price} a month.", "{plan} is popular. It costs {price} a month.")
    b.say(1, "Is there a contract?", "How long is the contract?")
    b.say(2, "{months} months, and you get {phone}.", "It's {months} months, and it comes with {phone}.")
    if rng.random() < 0.7:
        b.say(1, "OK, I'll sign up. The account is under {name}.", "Sounds good. Please switch me. My name is {name}.")
        summary = b.fill(
            "{name} switches to {plan} at {price} a month on a contract of {months} months and gets {phone}.",
            "#Person2# offers {name} {plan} for {price} a month for {months} months, and {name} signs up.")
    else:
        b.say(1, "{months} months is too long. I'm {name}, I'll think about it.", "I don't want a contract that long. I'm {name}, I'll come back.")
        summary = b.fill(
            "#Person2# offers {name} {plan} for {price} a month, but {name} thinks a contract of {months} months is too long.",
            "{name} wants a cheaper plan. #Person2# suggests {plan} at {price} a month, but {name} won't sign a contract of {months} months yet.")
    return b, summary


@_family("library", "borrowing books", ["The Silent River", "A Winter Garden", "The Last Lighthouse", "Stars Over Paris", "The Clockmaker", "Ocean of Glass"])
def _library(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, book=item, weeks=rng.choice(["two", "three", "four"]), fee=rng.choice(["10 cents", "25 cents", "50 cents"]),
             other=rng.choice(["a cookbook", "a travel guide", "a history book"]))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'd like to borrow {book}.", "Do you have {book}?", "I'm looking for a novel called {book}.")
    b.say(2, "Let me check. Yes, it's available. Your library card, please.", "Yes, we have one copy. May I see your card?")
    b.say(1, "Here it is. It's under {name}.", "Sure. The card is in the name of {name}.")
    b.aside(0.5, 1, ("Can I also take {other}?", "I'd also like {other}.",),
            2, ("Of course.", "Sure, that's fine.",))
    b.say(2, "You can keep it for {weeks} weeks.", "It's due in {weeks} weeks.")
    b.say(1, "What if I return it late?", "Is there a late fee?")
    b.say(2, "It's {fee} a day.", "The fine is {fee} for each day.")
    summary = b.fill(
        "{name} borrows {book} from the library for {weeks} weeks. #Person2# says the late fee is {fee} a day.",
        "#Person2# lends {name} the novel {book}. It is due in {weeks} weeks and costs {fee} a day if late.")
    return b, summary


@_family("gym", "gym membership", ["a monthly membership", "a yearly membership", "a student membership", "an off-peak membership", "a family membership"])
def _gym(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, member=item, price=f"${rng.randrange(20, 80, 5)}", cls=rng.choice(["yoga", "swimming", "spinning", "boxing", "pilates"]),
             day=rng.choice(DAYS))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'm interested in joining the gym.", "I want to get fit. How do I join?", "I'd like some information about membership.")
    b.say(2, "We have {member} for {price} a month.", "How about {member}? It's {price} a month.")
    b.say(1, "Are classes included? I like {cls}.", "Can I take {cls} classes?")
    b.say(2, "Yes, there is a {cls} class every {day}.", "Sure, {cls} is on {day} evenings.")
    b.say(1, "Great. Sign me up. My name is {name}.", "Perfect. I'll take it. I'm {name}.")
    b.maybe(0.5, 2, "Welcome, {name}. Here is your card.", "Welcome aboard, {name}.")
    summary = b.fill(
        "{name} joins the gym with {member} for {price} a month and plans to take {cls} on {day}.",
        "#Person2# sells {name} {member} at {price} a month. {name} likes {cls}, which is held on {day}.")
    return b, summary


@_family("apartment", "apartment viewing", ["a studio", "a one-bedroom apartment", "a two-bedroom apartment", "a loft", "a small house"])
def _apartment(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, flat=item, rent=f"${rng.randrange(600, 2500, 50)}", street=rng.choice(["Elm Street", "Maple Road", "Hill Street", "Lake Avenue"]),
             deposit=rng.choice(["one month's rent", "two months' rent"]), move=rng.choice(DAYS))
    b = _Builder(rng, s)
    b.say(2, "Hi, you must be {name}. Come in.", "Hello, {name}? I'm the landlord. Please come in.")
    b.say(1, "Thanks. So this is {flat} on {street}?", "Hi. Is this the {flat} on {street}?")
    b.say(2, "Yes. The rent is {rent} a month.", "That's right. It's {rent} a month.")
    b.aside(0.6, 1, ("Is it quiet at night?", "Are pets allowed?", "Is heating included?",),
            2, ("Yes, very quiet.", "Small pets are fine.", "Yes, it's included.",))
    b.say(1, "How much is the deposit?", "Do you need a deposit?")
    b.say(2, "{deposit}.", "The deposit is {deposit}.")
    if rng.random() < 0.6:
        b.say(1, "I'll take it. Can I move in on {move}?", "I like it. Could I move in on {move}?")
        b.say(2, "Sure, {move} is fine.", "No problem.")
        summary = b.fill(
            "{name} looks at {flat} on {street} for {rent} a month with a deposit of {deposit}, and decides to move in on {move}.",
            "{name} visits {flat} on {street}. The rent is {rent} a month and {name} will move in on {move}.")
    else:
        b.say(1, "It's nice, but I need to think about it.", "I'll let you know by {move}.")
        summary = b.fill(
            "{name} looks at {flat} on {street} for {rent} a month with a deposit of {deposit}, but hasn't decided yet.",
            "{name} visits {flat} on {street}. The rent is {rent} a month and {name} needs time to think.")
    return b, summary


@_family("tickets", "buying tickets", CITIES)
def _tickets(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, city=item, mode=rng.choice(["train", "bus", "plane"]), day=rng.choice(DAYS), time=rng.choice(TIMES),
             price=f"${rng.randrange(20, 400, 5)}", way=rng.choice(["a one-way", "a return"]), n=rng.choice(["one", "two", "three"]))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I need {n} tickets to {city} on {day}.", "Can I buy {n} {mode} tickets to {city} for {day}?", "I'd like {n} tickets to {city}, please, for {day}.")
    b.say(2, "The {mode} leaves at {time}. One-way or return?", "There is a {mode} at {time}. Do you want one-way or return?")
    b.say(1, "I'd like {way} ticket, please.", "I'll take {way} ticket.")
    b.say(2, "That's {price} each. Name, please?", "It comes to {price} per ticket. What name?")
    b.say(1, "{name}.", "It's {name}.")
    b.aside(0.5, 1, ("Which platform is it?", "Where do I get on?",),
            2, ("Gate number four.", "It's written on the ticket.",))
    summary = b.fill(
        "{name} buys {n} {way} tickets to {city} for the {mode} on {day} at {time}. Each ticket costs {price}.",
        "#Person2# sells {name} {n} {way} {mode} tickets to {city}, leaving {day} at {time}, for {price} each.")
    return b, summary


@_family("haircut", "haircut", ["a short trim", "a bob", "layers", "a buzz cut", "a fringe", "a perm"])
def _haircut(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, style=item, stylist=rng.choice(FIRST_NAMES), day=rng.choice(DAYS), time=rng.choice(TIMES),
             price=f"${rng.randrange(15, 90, 5)}")
    b = _Builder(rng, s)
    b.say(2, "Hair salon, {stylist} speaking.", "Hello, this is {stylist} at the salon.")
    b.say(1, "Hi, I'd like to book a haircut. I want {style}.", "Can I make an appointment for {style}?", "I'd like to get {style}.")
    b.say(2, "Sure. When would you like to come?", "When is good for you?")
    b.say(1, "Is {day} at {time} free?", "How about {day}, {time}?")
    b.maybe(0.5, 2, "Let me see.", "One moment, please.")
    b.say(2, "Yes, {day} at {time} is free. It will be {price}. Your name?", "That works. {style} is {price}. May I have your name?")
    b.say(1, "{name}.", "It's {name}. Thanks.")
    summary = b.fill(
        "{name} calls the salon and books {style} with {stylist} on {day} at {time} for {price}.",
        "{name} makes an appointment with {stylist} for {style} on {day} at {time}. It costs {price}.")
    return b, summary


@_family("party", "party planning", FIRST_NAMES)
def _party(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, friend=item, place=rng.choice(["the park", "a pizza place", "the community hall", "the beach", "a karaoke bar"]),
             day=rng.choice(DAYS), food=rng.choice(["a chocolate cake", "pizza", "a barbecue", "sandwiches"]), guests=rng.choice(["ten", "fifteen", "twenty", "thirty"]))
    b = _Builder(rng, s)
    b.say(1, "{friend}'s birthday is on {day}. Let's throw a surprise party.", "Hey, it's {friend}'s birthday on {day}. Any ideas for a party?")
    b.say(2, "Great idea. Where should we have it?", "Sure! Where?")
    b.say(1, "How about {place}?", "I think {place} would be nice.")
    b.say(2, "OK. How many people?", "Good. How many guests?")
    b.say(1, "About {guests}.", "Maybe {guests} people.")
    b.say(2, "I'll bring {food}.", "I can take care of {food}.")
    b.say(1, "Perfect. I'll ask {name} to help with the music.", "I'll ask {name} to bring the music.",
          "Good. And {name} can do the music.")
    b.maybe(0.5, 2, "Don't tell {friend}!", "It has to be a secret.")
    summary = b.fill(
        "#Person1# and #Person2# plan a surprise party for {friend}'s birthday on {day} at {place} for {guests} guests. #Person2# will bring {food} and {name} will help with music.",
        "They plan {friend}'s birthday party at {place} on {day}. About {guests} people will come, #Person2# brings {food}, and {name} does the music.")
    return b, summary


@_family("pharmacy", "pharmacy", ["cough syrup", "allergy tablets", "painkillers", "eye drops", "vitamin C", "sleeping pills"])
def _pharmacy(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, medicine=item, times=rng.choice(["twice", "three times", "once"]), meal=rng.choice(["after meals", "before bed", "with water"]),
             price=f"${rng.randrange(5, 40)}")
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I need some {medicine}.", "Do you have {medicine}?", "I'd like to buy {medicine}, please.")
    b.say(2, "Do you have a prescription?", "Is it for you?")
    b.say(1, "Yes, it's for me. My name is {name}.", "It's for me, {name}.")
    b.say(2, "Take it {times} a day, {meal}.", "You should take it {times} a day {meal}.")
    b.aside(0.5, 1, ("Any side effects?", "Can I drive after taking it?",),
            2, ("It may make you sleepy.", "It's usually fine.",))
    b.say(2, "That's {price}.", "It'll be {price}, please.")
    summary = b.fill(
        "{name} buys {medicine} for {price}. #Person2# explains to take it {times} a day {meal}.",
        "#Person2# sells {name} {medicine} for {price} and says to take it {times} a day {meal}.")
    return b, summary


@_family("tech", "tech support", ["laptop", "printer", "router", "tablet", "smart TV", "phone"])
def _tech(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, device=item, problem=rng.choice(["won't turn on", "keeps freezing", "has no internet", "is very slow"]),
             fix=rng.choice(["restart it", "update the software", "replace the cable", "reset it to factory settings"]),
             ticket=str(rng.randrange(1000, 9999)))
    b = _Builder(rng, s)
    b.say(2, "Tech support, how can I help?", "Hello, this is tech support.", "Help desk. What's the problem?")
    b.say(1, "Hi, my {device} {problem}.", "I have a problem. My {device} {problem}.", "My {device} {problem} since yesterday.")
    b.say(2, "Can I have your name?", "Who am I speaking with?")
    b.say(1, "{name}.", "This is {name}.")
    b.say(2, "OK, {name}. Please {fix}.", "Let's try this, {name}: {fix}.")
    b.maybe(0.5, 1, "Hold on... OK, done.", "Give me a second.")
    if rng.random() < 0.6:
        b.say(1, "It works now!", "That fixed it. Thanks!")
        summary = b.fill(
            "{name}'s {device} {problem}. Tech support tells {name} to {fix}, and that fixes it.",
            "{name} calls tech support because the {device} {problem}. After #Person2# suggests to {fix}, it works.")
    else:
        b.say(1, "It still doesn't work.", "No, it's the same.")
        b.say(2, "I'll open ticket {ticket} and send a technician.", "Then I'll create ticket {ticket}. A technician will call you.")
        summary = b.fill(
            "{name}'s {device} {problem}. Trying to {fix} doesn't help, so #Person2# opens ticket {ticket} for a technician.",
            "{name} calls tech support because the {device} {problem}. The fix doesn't work and #Person2# creates ticket {ticket}.")
    return b, summary


@_family("school", "parent-teacher meeting", ["math", "history", "science", "English", "art", "music"])
def _school(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, subject=item, child=rng.choice(FIRST_NAMES),
             issue=rng.choice(["is often late with homework", "talks too much in class", "has improved a lot", "finds the tests hard"]),
             plan=rng.choice(["check homework every evening", "find a tutor", "meet again next month", "read together at home"]))
    b = _Builder(rng, s)
    b.say(2, "Hello, you must be {child}'s parent.", "Good afternoon. Thanks for coming about {child}.")
    b.say(1, "Yes, I'm {name}. How is {child} doing?", "That's right. I'm {name}. How is {child} in class?")
    b.say(2, "In {subject}, {child} {issue}.", "Well, {child} {issue} in {subject}.")
    b.maybe(0.6, 1, "I see. What can we do?", "Oh. What do you suggest?")
    b.say(2, "I think you should {plan}.", "It would help to {plan}.")
    b.say(1, "OK, we'll {plan}.", "Fine, I will {plan}.")
    b.close()
    summary = b.fill(
        "{name} meets {child}'s {subject} teacher, who says {child} {issue}. They agree to {plan}.",
        "#Person2# tells {name} that {child} {issue} in {subject}. {name} will {plan}.")
    return b, summary


@_family("weekend", "weekend plans", ["hiking", "a movie", "a picnic", "a concert", "bowling", "a football game"])
def _weekend(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, activity=item, place=rng.choice(["the lake", "downtown", "the stadium", "the mall", "Green Park"]),
             day=rng.choice(["Saturday", "Sunday"]), time=rng.choice(TIMES))
    b = _Builder(rng, s)
    b.say(1, "Are you free this weekend?", "What are you doing this weekend?", "Any plans for the weekend?")
    b.say(2, "Not really. Why?", "Nothing special.")
    b.say(1, "How about {activity} at {place} on {day}?", "Let's go for {activity} at {place} on {day}.")
    b.aside(0.5, 2, ("Who else is coming?", "Just us?",),
            1, ("{name} is coming too.", "I invited {name} as well.",))
    if not any(name in text for _, text in b.turns):
        b.say(1, "Also, {name} will join us.", "{name} wants to come too.")
    if rng.random() < 0.7:
        b.say(2, "Sounds great. What time?", "Sure, I'd love to. When?")
        b.say(1, "Let's meet at {time}.", "At {time}.")
        summary = b.fill(
            "#Person1# invites #Person2# to {activity} at {place} on {day} with {name}. They will meet at {time}.",
            "#Person1#, #Person2# and {name} will go for {activity} at {place} on {day} at {time}.")
    else:
        b.say(2, "Sorry, I have to work on {day}.", "I'd love to, but I'm busy on {day}.")
        summary = b.fill(
            "#Person1# invites #Person2# to {activity} at {place} on {day} with {name}, but #Person2# is busy.",
            "#Person1# suggests {activity} at {place} on {day} with {name}. #Person2# can't come.")
    return b, summary


@_family("parcel", "sending a parcel", ["a box of books", "a birthday gift", "some documents", "a painting", "a package of clothes"])
def _parcel(rng: random.Random, name: str, item: str) -> Scripted:
    s = dict(name=name, parcel=item, city=rng.choice(CITIES), weight=rng.choice(["two kilos", "three kilos", "five kilos", "half a kilo"]),
             price=f"${rng.randrange(5, 60)}", days=rng.choice(COUNTS))
    b = _Builder(rng, s)
    b.greet()
    b.say(1, "I'd like to send {parcel} to {city}.", "Can I mail {parcel} to {city}?", "I need to send {parcel} to {city}.")
    b.say(2, "Put it on the scale, please. It's {weight}.", "Let me weigh it. It's {weight}.")
    b.say(1, "How much will it cost?", "What's the price?")
    b.say(2, "{price} by regular mail. It takes {days} days.", "It's {price}, and it will arrive in {days} days.")
    b.aside(0.5, 1, ("Is there anything faster?", "Can it go faster?",),
            2, ("Express is double the price.", "Only express, but it's more expensive.",))
    b.say(2, "Sender's name?", "Your name for the form?")
    b.say(1, "{name}.", "It's {name}.")
    summary = b.fill(
        "{name} sends {parcel} weighing {weight} to {city}. It costs {price} and takes {days} days.",
        "#Person2# helps {name} mail {parcel} to {city} for {price}. It weighs {weight} and will arrive in {days} days.")
    return b, summary


def generate_examples(seed: int = 0, n_train: int = 4000, n_validation: int = 300, n_test: int = 300) -> dict[str, list[Example]]:
    """Generate every split as Examples, keeping the slots (tests and pre-training read them)."""
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    families = sorted(FAMILIES)
    out: dict[str, list[Example]] = {}
    for index, split in enumerate(SPLITS):
        # One stream per split, so changing one split's size leaves the others unchanged.
        rng = random.Random(seed * 1_000 + index)
        want_heldout = split == "test"
        examples = []
        while len(examples) < sizes[split]:
            family = rng.choice(families)
            topic, items, build = FAMILIES[family]
            name, item = rng.choice(NAMES), rng.choice(items)
            if is_heldout(family, name, item) != want_heldout:
                continue
            builder, summary = build(rng, name, item)
            builder.chat()
            examples.append(Example(family, name, item, topic, builder.turns, summary, builder.slots))
        out[split] = examples
    return out


def generate_corpus(seed: int = 0, n_train: int = 4000, n_validation: int = 300, n_test: int = 300) -> dict[str, list[dict]]:
    """Generate the corpus as DialogSum hub rows ``{"id", "dialogue", "summary", "topic"}`` per split."""
    examples = generate_examples(seed, n_train, n_validation, n_test)
    return {
        split: [
            {"id": f"{split}_{i}", "dialogue": ex.dialogue, "summary": ex.summary, "topic": ex.topic}
            for i, ex in enumerate(rows)
        ]
        for split, rows in examples.items()
    }


def write_corpus(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``{split}.jsonl.gz`` files to ``folder``; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_corpus(seed).items():
        path = folder / f"{split}.jsonl.gz"
        # mtime=0 keeps the gzip bytes identical across reruns, so git sees no spurious change.
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            for row in rows:
                gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        paths[split] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    """Write the corpus files: the command in this module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dialogtune/assets/dialogs", help="folder to write the split files to")
    parser.add_argument("--seed", type=int, default=0, help="the shipped corpus uses seed 0")
    args = parser.parse_args(argv)
    for split, path in write_corpus(args.out, args.seed).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
