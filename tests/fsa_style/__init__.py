"""A small app and its tests written as a Flask-SQLAlchemy app would be, running on flask-uow."""
