"""The node's terms in a volunteer's words; the expert term goes into the tooltip.

Pages show ``words`` and set ``tooltip`` (which names the term, so nothing is hidden from those
who know it). Unknown terms pass through unchanged: a new role or phase still shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.node.values import TIER_MEANING, SpeedTier


@dataclass(frozen=True)
class Plain:
    words: str
    tooltip: str


TIER_WORDS = {
    "T1": "very fast (data-centre graphics card)",
    "T2": "fast (gaming graphics card)",
    "T3": "medium (mid-range graphics card or strong processor)",
    "T4": "modest (an ordinary processor): holds a few parts of the model",
    "T5": "too slow to train live with others: trains a copy on its own and sends what it learned",
}

ROLE_WORDS = {
    "driver": "feeds training text into the model",
    "worker": "computes its part of the model for the others",
    "validator": "computes the model's guesses and checks them against the text",
}
ROLE_TERMS = {
    "driver": "driver: holds the first layer (the embedding) and starts every training step",
    "worker": "worker: holds middle layers of the pipeline",
    "validator": "validator: holds the last layer (the head) and computes the loss",
}

MODE_WORDS = {
    "pipeline": "Train the model live, together with other computers.",
    "async": "Train a copy of the model on your own and send what it learned from time to time.",
    "data": "Keep a share of the training text and send it to computers that need it.",
    "verify": "Double-check other computers' work and report cheating (needs NEURO set aside as stake).",
    "inference": "Answer people's requests with the model, for a small fee per word.",
}

PHASE_WORDS = {
    "genesis": "just starting: this computer trains alone on the text that comes with the app",
    "micro": "a few computers (2–4)",
    "small": "a small network (5–19 computers)",
    "medium": "a medium network (20–99 computers)",
    "growing": "a growing network (100–499 computers)",
    "large": "a large network (500+ computers)",
}
TRAINING_ALONE = (
    "Training alone: no other computer is connected, so this one trains its own copy of the model on "
    "the text that comes with the app. To train with others, do one of these: "
    "(1) start NeuroShard on another computer on this network, with \"Who may connect\" set to your home "
    "network or the internet on both, and they find each other by themselves; "
    "(2) add a tracker address in Settings; "
    "(3) paste a friend's invite code in Settings (your own code, for friends, is on the Network page).")
"""What the dashboard says while the node has no peers; the wizard's summary says the same."""
TRAINING_ALONE_TERM = "A solo genesis network: this node holds every layer and trains on the bundled genesis data."

PHASE_TERM = ("Network phase (seed 001): genesis, micro, small, medium, growing, large. The model grows "
              "as the network does.")

GROUP_TERM = ("A training group (quorum) is a set of computers that together hold every layer of the "
              "model and train it step by step, passing their intermediate results (activations).")


def tier(tier_name: str) -> Plain:
    meaning = TIER_MEANING.get(SpeedTier(tier_name), "") if tier_name in SpeedTier.__members__ else ""
    words = TIER_WORDS.get(tier_name, tier_name)
    return Plain(words, f"Speed tier {tier_name}" + (f": {meaning}" if meaning else ""))


def roles(names: tuple[str, ...] | list[str]) -> Plain:
    if not names:
        return Plain("—", "")
    words = "; ".join(ROLE_WORDS.get(name, name) for name in names)
    return Plain(words[0].upper() + words[1:], "\n".join(ROLE_TERMS.get(name, name) for name in names))


def mode(name: str, description: str) -> Plain:
    return Plain(MODE_WORDS.get(name, description), f"{name}: {description}")


def phase(name: str) -> Plain:
    return Plain(PHASE_WORDS.get(name, name), PHASE_TERM)


def activity(text: str) -> str:
    """The node's activity line in plain words ("averaging" is DiLoCo's outer step)."""
    if text == "averaging":
        return "sharing what it learned with the other computers"
    if text.startswith("waiting for quorum"):
        return "waiting for other computers to form a training group"
    if text.startswith("waiting for a stage holder"):
        return "waiting for a computer that holds the next part of the model"
    return text


def state_detail(detail: str) -> str:
    """A state's detail for the badge: the roles ("driver+validator") are told on their own row."""
    if detail and all(part in ROLE_WORDS for part in detail.split("+")):
        return ""
    return activity(detail)


REACH_CHOICE_WORDS = {
    "home_network": "Computers on my home or office network",
    "internet": "Computers anywhere on the internet",
    "this_computer": "Only this computer (no other computer can train with it)",
}
"""The wizard's and Settings' answers to "who may connect to this computer" (config ``reach``)."""
REACH_CHOICE_TERMS = {
    "home_network": "Listens on every network interface; the router is not asked to open a port (UPnP off).",
    "internet": "Listens on every network interface and asks the router to forward the port (UPnP); "
                "when that fails, other computers reach it through a relay.",
    "this_computer": "Listens on 127.0.0.1 only (loopback).",
}
INVITE_WORDS = {
    "": "Give this code to a friend: pasted into their Settings, their computer connects to this one and "
        "checks that it really is this one.",
    "this_computer": "No invite code: only this computer may connect. Choose your home network or the "
                     "internet under \"Who may connect\" in Settings first.",
    "not_listening": "No invite code: this computer accepts no connections.",
    "unreachable": "No invite code: the last test found that no other computer can connect to this one. "
                   "Fix that first (see above), then try again.",
}
INVITE_TERM = "An invite code holds this node's address and its identity (node id); the joiner's TLS check pins it."
FIREWALL_NOTE = (
    "When NeuroShard starts, your computer's firewall may ask whether to let it accept connections. "
    "Allow it for the networks you chose here; if you refuse, other computers cannot connect and this "
    "one trains alone or through another volunteer's computer.")


def reachability(verdict: str, *, address: str = "", relay: str = "", port: int = 0, observed: str = "",
                 lan_peers: int = 0) -> Plain:
    """The self-test's result in plain words, with what to do about it; the test itself in the tooltip."""
    here = f" ({lan_peers} found on this network)" if lan_peers else ""
    forward = f"forward port {port} on your router to this computer" if port else "forward the node's port on your router"
    texts = {
        "not_listening": ("This computer accepts no connections, so other computers cannot start training "
                          "with it. To change it, choose who may connect in Settings.",
                          "The node does not listen (--no-listen)."),
        "this_computer": ("Only this computer can connect (you chose \"this computer only\"), so it trains "
                          "alone. To train with others, choose your home network or the internet in Settings.",
                          "Bound to loopback."),
        "local_network": (f"Computers on this network can connect at {address}{here}. Whether computers "
                          "elsewhere on the internet can reach it is not known: add a tracker address in "
                          "Settings to test that.",
                          "No tracker to dial the node back from outside; LAN address advertised."),
        "direct": (f"Reachable: other computers connect directly to {address}.",
                   f"A tracker dialled the advertised address back; it saw this computer as {observed or '?'}."),
        "upnp": (f"Reachable: your router opened a port for NeuroShard, and other computers connect to {address}.",
                 "UPnP port mapping, dialled back by a tracker."),
        "relay": (f"Other computers cannot call this one directly, so they reach it through another "
                  f"volunteer's computer ({relay}). That works, but more slowly: to connect directly, {forward}.",
                  f"Behind NAT: relayed; the tracker saw this computer as {observed or '?'}."),
        "unreachable": (f"No other computer can connect to this one right now. To fix it, {forward}, or allow "
                        "UPnP in your router's settings, then test again. The node keeps training meanwhile.",
                        f"The tracker could not dial {address or 'the node'} back and no relay is open; "
                        f"it saw this computer as {observed or '?'}."),
    }
    words, tip = texts.get(verdict, (f"Reachability: {verdict}", ""))
    return Plain(words, tip)
