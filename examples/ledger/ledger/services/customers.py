"""Customers: register one (with an empty account), read one, list them a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy.exc import IntegrityError

from ..adapter import DBAdapter
from ..database import db
from ..models import Customer
from . import notifications, rules
from .accounts import AccountDetails
from .errors import DuplicateEmail, NotFound

adapter = DBAdapter()


@dataclass(frozen=True, slots=True)
class CustomerDetails:
    """A customer and their account, fully loaded."""

    id: int
    name: str
    email: str
    account: AccountDetails

    @classmethod
    def of(cls, customer: Customer) -> CustomerDetails:
        return cls(
            id=customer.id,
            name=customer.name,
            email=customer.email,
            account=AccountDetails.of(customer.account),
        )


@dataclass(frozen=True, slots=True)
class CustomerPage:
    """One page of customers in id order, and how many customers there are in all."""

    items: list[CustomerDetails]
    page: int
    per_page: int
    total: int


@db.transactional(retries=3)
def register_customer(name: str, email: str) -> CustomerDetails:
    """Create a customer and open their account with a balance of 0.

    Raises :class:`DuplicateEmail` if the (case-insensitive) email is taken, also when another
    request registers it at the same moment: the unique constraint decides, and its
    ``IntegrityError`` becomes the same domain error. Sends ``customer.registered`` after commit.
    """
    name = rules.name(name)
    email = rules.email(email)
    if adapter.customer_email_exists(email):
        raise DuplicateEmail(email)
    try:
        customer = adapter.add_customer(name, email)
    except IntegrityError:
        raise DuplicateEmail(email) from None
    details = CustomerDetails.of(customer)

    db.on_commit(partial(notifications.customer_registered, details.id, details.email))
    return details


@db.transactional(read_only=True)
def get_customer(customer_id: int) -> CustomerDetails:
    """The customer with their account, or :class:`NotFound`."""
    customer = adapter.get_customer(customer_id)
    if customer is None:
        raise NotFound("customer", customer_id)
    return CustomerDetails.of(customer)


@db.transactional(read_only=True)
def list_customers(page: int = 1, per_page: int = 20) -> CustomerPage:
    """Customers ``(page - 1) * per_page`` onwards, in id order; count and page in one snapshot."""
    rows = adapter.list_customers(offset=(page - 1) * per_page, limit=per_page)
    return CustomerPage(
        items=[CustomerDetails.of(c) for c in rows],
        page=page,
        per_page=per_page,
        total=adapter.count_customers(),
    )
