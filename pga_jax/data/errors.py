"""Errors raised by the data input module."""


class DatasetError(Exception):
  """The data for a dataset is missing, unreadable or does not fit the config.

  The message always names the dataset, where the data was looked for, and
  what to do about it.
  """
