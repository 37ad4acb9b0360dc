//! Policy documents: parsing, validation and evaluation (being written).
