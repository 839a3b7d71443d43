"""What the stages of the study share: its sources, its manifest of suspicious models, the key
sets and the queries every model is asked, and what the owner's test will ask. The stages
(``experiments/``) only orchestrate these; a stage that needs what a later stage will ask (stage 03
queries a model before releasing its weights) takes it from here, never from that stage."""
