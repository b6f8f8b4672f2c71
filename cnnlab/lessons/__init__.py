"""Lessons: the 35 exercises of d2l chapter 7 as cards a class answers with cnnlab.

`catalogue` lists every exercise, grouped by section, with what a student does about it;
`answers` computes what a predict card reveals (from the layer table, never typed in);
`handoff` turns an experiment card into the values the Architecture and Train pages read.
No Streamlit here: `pages/lessons.py` lays the cards out.
"""
