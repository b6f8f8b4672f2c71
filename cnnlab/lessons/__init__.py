"""Lessons: the 35 exercises of d2l chapter 7 as cards a class answers with cnnlab.

`catalogue` lists every exercise, grouped by section, with what a student does about it;
`answers` computes what a predict card reveals (from the layer table, never typed in);
`runs` queues a paired or sweep card's runs as one group.
No Streamlit here: `pages/lessons.py` lays the cards out.
"""
