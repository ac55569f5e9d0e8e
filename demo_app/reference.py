"""Reference data and vocabularies the generator and the workload draw from.

Everything here is a constant, so generated content depends only on the seed
and the scale.
"""

from __future__ import annotations

import re
import unicodedata

# (country_code, country_name, region, weight of customers living there)
COUNTRIES: tuple[tuple[str, str, str, int], ...] = (
    ("US", "United States", "North America", 300),
    ("CA", "Canada", "North America", 60),
    ("MX", "Mexico", "Latin America", 20),
    ("BR", "Brazil", "Latin America", 25),
    ("AR", "Argentina", "Latin America", 8),
    ("CL", "Chile", "Latin America", 6),
    ("CO", "Colombia", "Latin America", 6),
    ("GB", "United Kingdom", "Europe", 100),
    ("IE", "Ireland", "Europe", 12),
    ("FR", "France", "Europe", 50),
    ("DE", "Germany", "Europe", 80),
    ("NL", "Netherlands", "Europe", 30),
    ("BE", "Belgium", "Europe", 12),
    ("ES", "Spain", "Europe", 30),
    ("PT", "Portugal", "Europe", 8),
    ("IT", "Italy", "Europe", 28),
    ("SE", "Sweden", "Europe", 18),
    ("NO", "Norway", "Europe", 10),
    ("DK", "Denmark", "Europe", 10),
    ("FI", "Finland", "Europe", 8),
    ("PL", "Poland", "Europe", 14),
    ("AT", "Austria", "Europe", 10),
    ("CH", "Switzerland", "Europe", 12),
    ("JP", "Japan", "Asia Pacific", 25),
    ("KR", "South Korea", "Asia Pacific", 10),
    ("SG", "Singapore", "Asia Pacific", 8),
    ("IN", "India", "Asia Pacific", 20),
    ("AU", "Australia", "Asia Pacific", 40),
    ("NZ", "New Zealand", "Asia Pacific", 8),
    ("ZA", "South Africa", "Africa", 8),
)

# fmt: off
FIRST_NAMES: tuple[str, ...] = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella",
    "James", "Mia", "William", "Amelia", "Benjamin", "Harper", "Lucas", "Evelyn", "Henry",
    "Charlotte", "Alexander", "Aisha", "Mohammed", "Priya", "Arjun", "Mei", "Wei", "Yuki",
    "Haruto", "Ji-woo", "Min-jun", "Sofía", "Mateo", "Valentina", "Santiago", "Camila",
    "José", "Zoë", "Björn", "Amélie", "Søren", "Chloé", "François", "Lena", "Jonas",
    "Freya", "Matteo", "Giulia", "Lukas", "Hannah", "Noor", "Omar", "Fatima", "Kwame",
    "Thandiwe", "Siobhán", "Seán", "Anna", "Jakub", "Zofia", "Mikael",
)

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Nguyen", "Kim", "Park", "Chen", "Wang", "Tanaka",
    "Sato", "Patel", "Singh", "Khan", "O'Brien", "O'Connor", "Müller", "Schmidt",
    "Schneider", "Fischer", "García", "Fernández", "González", "Rossi", "Russo", "Dubois",
    "Lefèvre", "Jansen", "de Vries", "van der Berg", "Andersson", "Johansson", "Nielsen",
    "Hansen", "Kowalski", "Nowak", "Silva", "Santos", "Costa", "Okafor", "Mensah", "Dlamini",
    "Murphy", "Kelly",
)

EMAIL_DOMAINS: tuple[str, ...] = (
    "example.com", "example.net", "example.org", "mail.example.com", "post.example.net",
)

# category -> (slug, sku prefix, median price in cents, nouns)
CATEGORIES: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "Kitchen": ("kitchen", "KIT", 2500, (
        "Chef's Knife", "Cutting Board", "Saucepan", "Cast Iron Skillet", "Espresso Cups",
        "Salad Bowl", "Measuring Spoons",
    )),
    "Home": ("home", "HOM", 3000, (
        "Throw Blanket", "Linen Cushion", "Table Lamp", "Scented Candle", "Wall Clock",
        "Plant Pot",
    )),
    "Outdoor": ("outdoor", "OUT", 4500, (
        "Camping Chair", "Trail Backpack", "Water Bottle", "Headlamp", "Picnic Blanket",
        "Hammock",
    )),
    "Apparel": ("apparel", "APP", 2800, (
        "Wool Socks", "Rain Jacket", "Beanie", "Cotton T-Shirt", "Hoodie", "Scarf",
    )),
    "Electronics": ("electronics", "ELE", 4000, (
        "Wireless Earbuds", "Phone Charger", "Bluetooth Speaker", "USB-C Cable", "Power Bank",
        "Smart Plug",
    )),
    "Books": ("books", "BOO", 1800, (
        "Cookbook", "Travel Guide", "Notebook", "Sketchbook", "Planner",
    )),
    "Beauty": ("beauty", "BEA", 1400, (
        "Hand Cream", "Lip Balm", "Shampoo Bar", "Face Serum", "Soap Set",
    )),
    "Toys": ("toys", "TOY", 2200, (
        "Jigsaw Puzzle", "Building Blocks", "Plush Bear", "Board Game", "Kite",
    )),
    "Garden": ("garden", "GAR", 1900, (
        "Pruning Shears", "Watering Can", "Seed Kit", "Garden Gloves",
    )),
    "Pets": ("pets", "PET", 2000, (
        "Dog Leash", "Cat Scratcher", "Pet Bed", "Chew Toy",
    )),
}

ADJECTIVES: tuple[str, ...] = (
    "Classic", "Everyday", "Premium", "Compact", "Organic", "Vintage", "Nordic", "Deluxe",
    "Essential", "Eco", "Handmade", "Travel",
)

SEARCH_TERMS: tuple[str, ...] = (
    "gift for dad", "birthday present", "sale", "knife", "blanket", "backpack", "earbuds",
    "socks", "candle", "puzzle", "dog", "cast iron", "rain jacket", "usb c", "planner",
    "hand cream", "lamp", "water bottle", "board game", "seeds",
)

# fmt: on

# (method, weight) of successful checkouts; bank transfers settle days later.
PAYMENT_METHODS: tuple[tuple[str, int], ...] = (
    ("card", 62),
    ("paypal", 25),
    ("gift_card", 5),
    ("bank_transfer", 8),
)

DEVICES: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("mobile", 55, ("safari", "chrome", "samsung_internet")),
    ("desktop", 38, ("chrome", "firefox", "safari", "edge")),
    ("tablet", 7, ("safari", "chrome")),
)

REFERRERS: tuple[tuple[str, int], ...] = (
    ("direct", 35),
    ("google", 30),
    ("newsletter", 10),
    ("instagram", 8),
    ("facebook", 6),
    ("bing", 4),
    ("tiktok", 4),
    ("affiliate", 3),
)

# Share of sessions starting in each UTC hour: quiet at night, busy in the evening.
HOUR_WEIGHTS: tuple[int, ...] = (
    3,
    2,
    2,
    1,
    1,
    1,
    2,
    3,
    5,
    6,
    7,
    7,
    8,
    8,
    8,
    8,
    8,
    9,
    10,
    11,
    11,
    9,
    7,
    5,
)

# Monday .. Sunday
WEEKDAY_WEIGHTS: tuple[float, ...] = (1.0, 0.97, 0.98, 1.0, 1.05, 1.2, 1.15)


def slugify(text: str) -> str:
    """ASCII, lowercase, letters and digits only: "Søren O'Brien" -> "sorenobrien"."""
    folded = unicodedata.normalize("NFKD", text.replace("ø", "o").replace("Ø", "O"))
    return re.sub(r"[^a-z0-9]", "", folded.encode("ascii", "ignore").decode().lower())
